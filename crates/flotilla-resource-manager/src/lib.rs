//! flotilla-resource-manager
