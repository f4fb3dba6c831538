import Formats
import ArgumentParser
import Bench
import Foundation
import Quant

/// Training-step throughput on fixed shapes, next to OpenBLAS's own sgemm rate in the same run.
struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Tokens/s of one training step (forward, backward, AdamW) and the FLOP rate it implies.",
        discussion: """
            Shapes: tiny = Qwen3 blocks, hidden 256, 4 layers, 4 heads / 2 KV heads, head_dim 64, MLP 768, \
            vocab 512, batch 8 x 256; smol = the SmolLM2-135M shape (hidden 576, 30 layers, 9/3 heads, MLP 1536, \
            vocab 49152, tied), batch 2 x 256. Random weights and tokens (speed does not depend on them). \
            FLOPs per token = 6 x (matrix parameters incl. the LM head) + 6 x layers x T x heads x head_dim \
            (causal attention, half of the T x T products, forward + backward).
            """)

    enum Shape: String, ExpressibleByArgument, CaseIterable { case tiny, smol, both }

    @Option(help: "tiny, smol or both.") var shape: Shape = .both
    @Option(help: "Timed steps; the median is reported.") var steps = 5
    @Option(help: "Also time the step with fake-quant weights (QAT) at this scheme, e.g. w3g128, and report the overhead; with activation or KV bits (w4a4kv4), the weight-only step next to it.")
    var qat: String?
    @Option(help: "With --qat: also time the step from a quarot or flatquant init (its online transforms fixed), and report their cost over the --qat step.")
    var transform: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    func run() throws {
        runtime.apply()
        try reportingErrors { try measure() }
    }

    func measure() throws {
        let cases = shape == .both ? [TrainBench.tiny, TrainBench.smol] : shape == .tiny ? [TrainBench.tiny] : [TrainBench.smol]
        let qatScheme = try qat.map { try QuantScheme.parse($0) }
        guard transform == nil || qatScheme != nil else { throw CLIError("--transform times the QAT step from such an init: give --qat too") }
        let initTransform = try transform.map { name in
            guard let t = PTQTransform(rawValue: name) else { throw CLIError("--transform must be quarot or flatquant, not \(name)") }
            return t
        }
        for c in cases {
            let plain = try TrainBench.step(c, steps: steps)
            output.emit(plain, text: String(format: "%@ (%d x %d): %7.0f tokens/s  %6.1f GFLOP/s = %3.0f%% of sgemm (%5.1f GFLOP/s at %dx%dx%d)  activations %.0f MB",
                                            c.name, c.batch, c.length, plain.tokensPerS, plain.gflopPerS, 100 * plain.fractionOfSgemm,
                                            plain.sgemmGflopPerS, c.batch * c.length, c.config.intermediateSize, c.config.hiddenSize,
                                            plain.activationMB))
            guard let qatScheme else { continue }
            var weightOnly = qatScheme
            weightOnly.activationBits = nil
            weightOnly.kvBits = nil
            var rates: [QuantScheme: Double] = [:]
            // With activation or KV bits, the weight-only step of the same weights is timed too.
            for scheme in weightOnly == qatScheme ? [qatScheme] : [weightOnly, qatScheme] {
                for mode in [FakeQuantizer.Mode.ste, .lsq] {
                    let q = try TrainBench.qatStep(c, steps: steps, scheme: scheme, mode: mode, plain: plain)
                    if mode == .ste { rates[scheme] = q.tokensPerS }
                    output.emit(q, text: String(format: "%@ QAT %@ %@: %7.0f tokens/s  (fake-quant costs %+.1f%% of the step)",
                                                c.name, q.scheme, q.mode, q.tokensPerS, 100 * q.overheadFraction))
                }
            }
            if weightOnly != qatScheme, let w = rates[weightOnly], let a = rates[qatScheme] {
                printErr(String(format: "%@: activation and KV-cache fake quantization cost %+.1f%% over the weight-only %@ step (STE)",
                                c.name, 100 * (w / a - 1), weightOnly.description))
            }
            if let transform = initTransform, let a = rates[qatScheme] {
                let q = try TrainBench.qatStep(c, steps: steps, scheme: qatScheme, mode: .ste, transform: transform, plain: plain)
                output.emit(q, text: String(format: "%@ QAT %@ ste: %7.0f tokens/s  (fake-quant and transforms cost %+.1f%% of the step)",
                                            c.name, q.scheme, q.tokensPerS, 100 * q.overheadFraction))
                printErr(String(format: "%@: %@'s online transforms cost %+.1f%% over the %@ step (STE)",
                                c.name, transform.rawValue, 100 * (a / q.tokensPerS - 1), qatScheme.description))
            }
        }
    }
}
