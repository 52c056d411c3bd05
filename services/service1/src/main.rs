fn main() -> std::process::ExitCode {
    service_kit::server::main(service1::spec())
}
