#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init();
    service_kit::serve(service1::spec()).await?;
    Ok(())
}
