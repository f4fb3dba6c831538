import ArgumentParser

/// Placeholder: being written.
struct BenchCluster: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster", abstract: "(being written)")
    func run() throws { throw CLIError("rqat bench cluster is not written yet") }
}
