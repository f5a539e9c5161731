fn main() {
    eprintln!("vlk-codegen: not yet implemented");
    std::process::exit(2);
}
