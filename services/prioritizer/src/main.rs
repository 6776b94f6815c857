use std::process::ExitCode;

fn main() -> ExitCode {
    picket_platform::run(
        prioritizer::SERVICE,
        prioritizer::DEFAULTS,
        prioritizer::build,
    )
}
