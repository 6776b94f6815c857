use std::process::ExitCode;

fn main() -> ExitCode {
    picket_platform::run(scanner::SERVICE, scanner::DEFAULTS, scanner::build)
}
