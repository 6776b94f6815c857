use std::process::ExitCode;

fn main() -> ExitCode {
    picket_platform::run(notifier::SERVICE, notifier::DEFAULTS, notifier::build)
}
