//! Tenants and their connection: onboarding, admin consent, and the TenantService API.

pub mod api;
pub mod callback;
pub mod consent;
pub mod onboarding;
pub mod signin;
pub mod store;
