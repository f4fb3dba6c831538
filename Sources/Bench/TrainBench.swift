import Foundation
import Formats
import Model
import Quant
import Tensors
import Train

/// `rqat bench train`: tokens/s of full training steps (forward, masked cross-entropy,
/// backward, clipping, AdamW) on random weights and tokens (speed does not depend on them), the
/// FLOP rate that implies, and OpenBLAS's own sgemm rate at one of the step's shapes in the
/// same run, since the machine's speed drifts between runs.
package enum TrainBench {
    /// A model shape and the micro-batch a step trains on.
    package struct Case: Sendable {
        package let name: String
        package let config: ModelConfig
        package let batch: Int
        package let length: Int

        package init(name: String, config: ModelConfig, batch: Int, length: Int) {
            self.name = name
            self.config = config
            self.batch = batch
            self.length = length
        }
    }

    package static let tiny = Case(name: "tiny", config: ModelConfig(
        modelType: .qwen3, hiddenSize: 256, intermediateSize: 768, numHiddenLayers: 4, numAttentionHeads: 4,
        numKeyValueHeads: 2, headDim: 64, vocabSize: 512, rmsNormEps: 1e-6, ropeTheta: 1_000_000,
        maxPositionEmbeddings: 1024, tieWordEmbeddings: true), batch: 8, length: 256)
    package static let smol = Case(name: "smol", config: ModelConfig(
        modelType: .llama, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30, numAttentionHeads: 9,
        numKeyValueHeads: 3, headDim: 64, vocabSize: 49152, rmsNormEps: 1e-5, ropeTheta: 100_000,
        maxPositionEmbeddings: 8192, tieWordEmbeddings: true), batch: 2, length: 256)

    /// The plain step: median tokens/s of `steps` steps after a warm-up one, against sgemm at
    /// (batch x length) x intermediate x hidden.
    package static func step(_ c: Case, steps: Int) throws -> TrainStepRecord {
        let sgemm = sgemmRate(m: c.batch * c.length, n: c.config.intermediateSize, k: c.config.hiddenSize)
        let (tokensPerSecond, memory) = try stepRate(c, steps: steps, qat: nil)
        let achieved = tokensPerSecond * trainingFLOPsPerToken(c.config, length: c.length)
        return TrainStepRecord(shape: c.name, batch: c.batch, seqLen: c.length, tokensPerS: tokensPerSecond,
                               gflopPerS: achieved / 1e9, sgemmGflopPerS: sgemm / 1e9, fractionOfSgemm: achieved / sgemm,
                               activationMB: Double(memory) / 1e6, threads: Threads.count)
    }

    /// The same step with fake-quant weights, and its cost over `plain` (the plain step's record);
    /// with `transform`, the init's online transforms run too (QuaRot's Hadamards, FlatQuant's
    /// Kronecker transforms at identity, fixed, as QAT from such an init runs them).
    package static func qatStep(_ c: Case, steps: Int, scheme: QuantScheme, mode: FakeQuantizer.Mode, transform: PTQTransform? = nil,
                                plain: TrainStepRecord) throws -> TrainStepQATRecord {
        let (rate, _) = try stepRate(c, steps: steps, qat: (scheme, mode), transform: transform)
        return TrainStepQATRecord(shape: c.name, batch: c.batch, seqLen: c.length,
                                  scheme: scheme.description + (transform.map { "+" + $0.rawValue } ?? ""), mode: mode.rawValue,
                                  tokensPerS: rate, overheadFraction: plain.tokensPerS / rate - 1, threads: Threads.count)
    }

    /// Median tokens/s of `steps` full steps after one warm-up step, and the activation bytes.
    static func stepRate(_ c: Case, steps: Int, qat: (QuantScheme, FakeQuantizer.Mode)?, transform: PTQTransform? = nil) throws -> (Double, Int) {
        let model = TrainableDecoder(config: c.config, seed: 1)
        let quantizer = try qat.map { try FakeQuantizer(decoder: model, scheme: $0.0, mode: $0.1) }
        model.weightQuantizer = quantizer
        let spec = qat.flatMap { ActivationQuantSpec(scheme: $0.0) }
        try model.installRunTimeTransforms(try transform.map { try onlineTransforms($0, config: c.config, activation: spec) }, activation: spec)
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

    /// The transforms of a `transform` init of this shape: QuaRot's Hadamards, or FlatQuant's at identity.
    static func onlineTransforms(_ transform: PTQTransform, config: ModelConfig, activation: ActivationQuantSpec?) throws -> OnlineTransforms {
        switch transform {
        case .quarot:
            return OnlineTransforms(rotation: RotationSpec(method: transform.rawValue, seed: 0, onlineDownHadamard: true, onlineQKHadamard: true))
        case .flatquant:
            var tensors: [String: Tensor] = [:]
            for l in 0..<config.numHiddenLayers {
                tensors.merge(try FlatQuantBlock(layer: l, config: config, activation: activation).savedTensors) { $1 }
            }
            return OnlineTransforms(rotation: RotationSpec(method: transform.rawValue, seed: 0, onlineDownHadamard: false), tensors: tensors)
        }
    }

    /// 6 x (matrix parameters incl. the LM head) + 6 x layers x T x heads x head_dim: causal
    /// attention does half of the T x T products, forward + backward.
    package static func trainingFLOPsPerToken(_ c: ModelConfig, length: Int) -> Double {
        let d = c.headDim, attnWidth = c.numAttentionHeads * d, kvWidth = c.numKeyValueHeads * d
        let perLayer = c.hiddenSize * (attnWidth + 2 * kvWidth) + attnWidth * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize
        let matrices = Double(c.numHiddenLayers * perLayer + c.vocabSize * c.hiddenSize)
        let attention = Double(c.numHiddenLayers * length * attnWidth)
        return 6 * matrices + 6 * attention
    }

    /// OpenBLAS sgemm FLOP/s at one of the step's own shapes (best of 5 after a warm-up).
    static func sgemmRate(m: Int, n: Int, k: Int) -> Double {
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

package struct TrainStepRecord: BenchRecord, Equatable {
    package static let name = "train_step"
    package var shape: String
    package var batch: Int, seqLen: Int
    package var tokensPerS: Double
    package var gflopPerS: Double, sgemmGflopPerS: Double, fractionOfSgemm: Double
    package var activationMB: Double
    package var threads: Int

    enum CodingKeys: String, CodingKey {
        case shape, batch, threads
        case seqLen = "seq_len"
        case tokensPerS = "tokens_per_s"
        case gflopPerS = "gflop_per_s", sgemmGflopPerS = "sgemm_gflop_per_s", fractionOfSgemm = "fraction_of_sgemm"
        case activationMB = "activation_mb"
    }
}

package struct TrainStepQATRecord: BenchRecord, Equatable {
    package static let name = "train_step_qat"
    package var shape: String
    package var batch: Int, seqLen: Int
    package var scheme: String, mode: String
    package var tokensPerS: Double
    /// Plain tokens/s over fake-quant tokens/s, minus 1.
    package var overheadFraction: Double
    package var threads: Int

    enum CodingKeys: String, CodingKey {
        case shape, batch, scheme, mode, threads
        case seqLen = "seq_len"
        case tokensPerS = "tokens_per_s"
        case overheadFraction = "overhead_fraction"
    }
}
