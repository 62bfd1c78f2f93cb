//! flotilla-cli
