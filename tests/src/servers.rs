//! Private servers for fault tests (filled in with the fault tests).
