import ArgumentParser

/// Placeholder: being written.
struct BenchWire: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wire", abstract: "(being written)")
    func run() throws { throw CLIError("rqat bench wire is not written yet") }
}
