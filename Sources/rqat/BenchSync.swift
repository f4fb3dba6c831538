import ArgumentParser
import Bench
import Cluster
import Foundation
import Formats

struct BenchSync: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Bytes and seconds of one RL weight sync (the quantized policy a student sends its serving ranks), against the fp32 model.",
        discussion: """
            The model's block linears are fake-quantized at --scheme (min/max grids) and sent as \
            the RL stage sends them: packed codes, fp16 scales and zeros, the other tensors in fp32 \
            or with the embedding (and a separate LM head) in bf16; raw and shuffled zstd. Under \
            `mpirun -np 2` rank 0 also times the whole sync over the link (encode, send, decode and \
            rebuild on rank 1, acknowledgement). Each figure is the median of --rounds.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.") var model = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "Weight scheme of the policy.") var scheme = "w3g128"
    @Option(help: "Rounds of each measurement.") var rounds = 3
    @OptionGroup var output: BenchOutput
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let world = try MPI.initialize()
            defer { MPI.finalize() }
            let records = try SyncBench.run(model: model, scheme: try QuantScheme.parse(scheme), rounds: rounds, world: world,
                                            log: { if !output.json { print($0) } })
            if output.json { for r in records { print(r.jsonLine()) } }
        }
    }
}
