use std::process::ExitCode;

fn main() -> ExitCode {
    picket_platform::run(ledger::SERVICE, ledger::DEFAULTS, ledger::build)
}
