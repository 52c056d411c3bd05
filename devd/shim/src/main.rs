fn main() {
    std::process::exit(stand_shim::main_entry());
}
