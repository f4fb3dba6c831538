import ArgumentParser
import Foundation
import Jobs
import Formats
import Quant
import Model
import Tensors
import Train

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
    @Option(help: "Also time the step with fake-quant weights (QAT) at this scheme, e.g. w3g128, and report the overhead.")
    var qat: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    struct Case { let name: String; let config: ModelConfig; let batch: Int; let length: Int }

    static let tiny = Case(name: "tiny", config: ModelConfig(
        modelType: .qwen3, hiddenSize: 256, intermediateSize: 768, numHiddenLayers: 4, numAttentionHeads: 4,
        numKeyValueHeads: 2, headDim: 64, vocabSize: 512, rmsNormEps: 1e-6, ropeTheta: 1_000_000,
        maxPositionEmbeddings: 1024, tieWordEmbeddings: true), batch: 8, length: 256)
    static let smol = Case(name: "smol", config: ModelConfig(
        modelType: .llama, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30, numAttentionHeads: 9,
        numKeyValueHeads: 3, headDim: 64, vocabSize: 49152, rmsNormEps: 1e-5, ropeTheta: 100_000,
        maxPositionEmbeddings: 8192, tieWordEmbeddings: true), batch: 2, length: 256)

    func run() throws {
        runtime.apply()
        try reportingErrors { try measure() }
    }

    func measure() throws {
        let threads = Threads.count
        let cases = shape == .both ? [Self.tiny, Self.smol] : shape == .tiny ? [Self.tiny] : [Self.smol]
        let qatScheme = try qat.map { try QuantScheme.parse($0) }
        for c in cases {
            let sgemm = sgemmRate(m: c.batch * c.length, n: c.config.intermediateSize, k: c.config.hiddenSize)
            let (tokensPerSecond, memory) = try stepRate(c, qat: nil)
            let flopsPerToken = trainingFLOPsPerToken(c.config, length: c.length)
            let achieved = tokensPerSecond * flopsPerToken
            output.emit("train_step",
                        [("shape", c.name), ("batch", c.batch), ("seq_len", c.length), ("tokens_per_s", tokensPerSecond),
                         ("gflop_per_s", achieved / 1e9), ("sgemm_gflop_per_s", sgemm / 1e9),
                         ("fraction_of_sgemm", achieved / sgemm), ("activation_mb", Double(memory) / 1e6),
                         ("threads", threads)],
                        text: String(format: "%@ (%d x %d): %7.0f tokens/s  %6.1f GFLOP/s = %3.0f%% of sgemm (%5.1f GFLOP/s at %dx%dx%d)  activations %.0f MB",
                                     c.name, c.batch, c.length, tokensPerSecond, achieved / 1e9, 100 * achieved / sgemm,
                                     sgemm / 1e9, c.batch * c.length, c.config.intermediateSize, c.config.hiddenSize,
                                     Double(memory) / 1e6))
            if let qatScheme {
                for mode in [FakeQuantizer.Mode.ste, .lsq] {
                    let (qatRate, _) = try stepRate(c, qat: (qatScheme, mode))
                    output.emit("train_step_qat",
                                [("shape", c.name), ("batch", c.batch), ("seq_len", c.length), ("scheme", qatScheme.description),
                                 ("mode", mode.rawValue), ("tokens_per_s", qatRate),
                                 ("overhead_fraction", tokensPerSecond / qatRate - 1), ("threads", threads)],
                                text: String(format: "%@ QAT %@ %@: %7.0f tokens/s  (fake-quant costs %+.1f%% of the step)",
                                             c.name, qatScheme.description, mode.rawValue, qatRate,
                                             100 * (tokensPerSecond / qatRate - 1)))
                }
            }
        }
    }

    /// Median tokens/s of `steps` full steps after one warm-up step.
    func stepRate(_ c: Case, qat: (QuantScheme, FakeQuantizer.Mode)?) throws -> (Double, Int) {
        let model = TrainableDecoder(config: c.config, seed: 1)
        let quantizer = try qat.map { try FakeQuantizer(decoder: model, scheme: $0.0, mode: $0.1) }
        model.weightQuantizer = quantizer
        let parameters = model.parameters + (quantizer?.parameters ?? [])
        let optimizer = AdamW(parameters: parameters, beta1: 0.9, beta2: 0.95, weightDecay: 0.1)
        var rng = SeededRNG(seed: 2)
        let n = c.batch * c.length
        let tokens = (0..<n).map { _ in Int(rng.next() % UInt64(c.config.vocabSize)) }
        let targets = Array(tokens.dropFirst()) + [0]
        let weights = [Float](repeating: 1, count: n)
        var times: [Double] = []
        for i in 0...steps {
            let t = seconds {
                let logits = model.forward(tokens: tokens, batch: c.batch, length: c.length)
                _ = CrossEntropy.forwardBackward(logits: logits.ptr, vocab: c.config.vocabSize, targets: targets,
                                                 weights: weights, normalizer: Double(n), gradient: logits.ptr)
                model.backward(dLogits: logits)
                Gradients.clipGlobalNorm(parameters, maxNorm: 1)
                optimizer.step(lr: 1e-4)
                optimizer.zeroGrad()
                quantizer?.refresh()
            }
            if i > 0 { times.append(t) }
        }
        times.sort()
        return (Double(n) / times[times.count / 2], model.activationBytes(batch: c.batch, length: c.length))
    }

    func trainingFLOPsPerToken(_ c: ModelConfig, length: Int) -> Double {
        let d = c.headDim, attnWidth = c.numAttentionHeads * d, kvWidth = c.numKeyValueHeads * d
        let perLayer = c.hiddenSize * (attnWidth + 2 * kvWidth) + attnWidth * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize
        let matrices = Double(c.numHiddenLayers * perLayer + c.vocabSize * c.hiddenSize)
        let attention = Double(c.numHiddenLayers * length * attnWidth)
        return 6 * matrices + 6 * attention
    }

    /// OpenBLAS sgemm FLOP/s at one of the step's own shapes (best of 5).
    func sgemmRate(m: Int, n: Int, k: Int) -> Double {
        let a = Tensor(shape: [m, k]), b = Tensor(shape: [n, k]), c = Tensor(shape: [m, n])
        var rng = SeededRNG(seed: 3)
        rng.fillNormal(a)
        rng.fillNormal(b)
        var best = Double.infinity
        for _ in 0..<6 {
            best = min(best, seconds {
                Gemm.sgemm(transB: true, m: m, n: n, k: k, a: a.ptr, lda: k, b: b.ptr, ldb: k, c: c.ptr, ldc: n)
            })
        }
        return 2 * Double(m) * Double(n) * Double(k) / best
    }
}
