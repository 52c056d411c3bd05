//! service2: a stand application service. Everything generic lives in `service-kit`;
//! this crate names the service and says what is its own.

use service_kit::routes::ITEMS_MIGRATIONS;
use service_kit::{ServiceInfo, ServiceSpec};

pub const NAME: &str = "service2";
pub const DEFAULT_PORT: u16 = 5002;

/// The service's greeting at `GET /api/service2`.
pub const MESSAGE: &str = "hello from service2";

pub fn spec() -> ServiceSpec {
    ServiceSpec {
        info: ServiceInfo { name: NAME, version: env!("CARGO_PKG_VERSION"), message: MESSAGE },
        default_port: DEFAULT_PORT,
        migrations: ITEMS_MIGRATIONS,
    }
}
