use std::process::ExitCode;

fn main() -> ExitCode {
    picket_platform::run(
        offboarding::SERVICE,
        offboarding::DEFAULTS,
        offboarding::build,
    )
}
