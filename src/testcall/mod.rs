//! `backstop test-call`: a real call placed to the agent, or through the
//! business's PBX, to prove that the calls reach it. The only code in the
//! binary that sends an INVITE, and it runs only from this command.
