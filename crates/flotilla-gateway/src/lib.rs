//! flotilla-gateway
