import ArgumentParser
import Foundation
import Formats
import Quant
import Train
import Cluster
import Jobs

@main
struct RQAT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rqat",
        abstract: "Low-bit quantization-aware training of reasoning LLMs on CPU clusters.",
        subcommands: [Info.self, Tokenize.self, InitCommand.self, Generate.self, Perplexity.self, EvalCommand.self, DataCommand.self, PipelineCommand.self, SFT.self, TrainCommand.self, RLCommand.self, PTQCommand.self, BenchCommand.self])
}

/// Options every model-running command shares.
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and our kernels (default: RQAT_NUM_THREADS, OPENBLAS_NUM_THREADS, or all cores).")
    var threads: Int?

    func apply() {
        if let threads { Threads.set(threads) } else { Threads.set(Threads.count) }
    }
}

import Tensors

/// Runs a command body, turning input errors into one line on stderr and a non-zero exit
/// instead of a crash or a stack of Swift error text.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as UserFacingError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

struct CLIError: UserFacingError {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

func printErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
