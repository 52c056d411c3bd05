//! service1: a stand application service. Everything generic lives in `service-kit`;
//! this crate names the service and says what is its own.

use service_kit::routes::ITEMS_MIGRATIONS;
use service_kit::{ServiceInfo, ServiceSpec};

pub const NAME: &str = "service1";
pub const DEFAULT_PORT: u16 = 5001;

/// The service's greeting at `GET /api/service1`.
pub const MESSAGE: &str = "hello from service1";

pub fn spec() -> ServiceSpec {
    ServiceSpec {
        info: ServiceInfo { name: NAME, version: env!("CARGO_PKG_VERSION"), message: MESSAGE },
        default_port: DEFAULT_PORT,
        migrations: ITEMS_MIGRATIONS,
    }
}
