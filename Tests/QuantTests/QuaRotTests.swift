import Foundation
import XCTest
import Formats
import Model
import Quant
import Tensors
import TestSupport

/// QuaRot's rotation leaves the model's function unchanged: logits of the rotated decoder equal
/// the original's on every prefill position.
final class QuaRotTests: XCTestCase {
    /// A tiny random model of the family, tied embeddings, norms not 1 (so folding matters).
    /// Hidden 48 = 12 x 4, intermediate 96 = 12 x 8, head dim 16.
    static func tinyWeights(_ family: ModelConfig.Family, seed: UInt64, tied: Bool = true) throws -> DecoderWeights {
        let config = ModelConfig(modelType: family, hiddenSize: 48, intermediateSize: 96, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: 80,
                                 rmsNormEps: 1e-6, ropeTheta: 10_000, tieWordEmbeddings: tied)
        var rng = SeededRNG(seed: seed)
        var tensors: [String: Tensor] = [:]
        for spec in DecoderArchitecture(config).tensors {
            let t = Tensor(shape: spec.shape)
            switch spec.role.kind {
            case .norm: for i in 0..<t.count { t.ptr[i] = 1 + 0.3 * rng.normal() }
            case .bias: rng.fillNormal(t, std: 0.1)
            case .matrix: rng.fillNormal(t, std: 0.2)
            }
            tensors[spec.name] = t
        }
        return try DecoderWeights(config: config, source: InMemoryWeights(tensors))
    }

    /// Logits (tokens, V) of a prefill of `tokens`.
    static func logits(_ weights: DecoderWeights, _ tokens: [Int]) -> Tensor {
        let decoder = Decoder(weights: weights)
        let cache = decoder.makeCache(capacities: [tokens.count])
        return decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: cache, allLogits: true)
    }

    /// max |a - b| / max |a|.
    static func relativeDifference(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape)
        var diff: Float = 0, scale: Float = 0
        for i in 0..<a.count {
            diff = max(diff, abs(a.ptr[i] - b.ptr[i]))
            scale = max(scale, abs(a.ptr[i]))
        }
        return diff / scale
    }

    static func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
        var diff: Float = 0
        for i in 0..<min(a.count, b.count) { diff = max(diff, abs(a.ptr[i] - b.ptr[i])) }
        return diff
    }

    func checkRotated(_ original: DecoderWeights, _ rotated: DecoderWeights, options: QuaRot.Options) {
        XCTAssertFalse(rotated.config.tieWordEmbeddings)
        XCTAssertFalse(rotated.lmHead.weight.dense === rotated.embedding, "LM head untied")
        XCTAssertGreaterThan(Self.maxAbsDifference(original.embedding, rotated.embedding), 1e-3, "embedding rotated")
        XCTAssertGreaterThan(Self.maxAbsDifference(original.layers[0].qkv.weight.dense, rotated.layers[0].qkv.weight.dense), 1e-3)
        XCTAssertGreaterThan(Self.maxAbsDifference(original.layers[0].down.weight.dense, rotated.layers[0].down.weight.dense), 1e-3)
        XCTAssertTrue(rotated.finalNorm.buffer.allSatisfy { $0 == 1 }, "final norm folded")
        for layer in rotated.layers {
            XCTAssertTrue(layer.inputNorm.buffer.allSatisfy { $0 == 1 }, "input norm folded")
            XCTAssertTrue(layer.postAttentionNorm.buffer.allSatisfy { $0 == 1 }, "post-attention norm folded")
            XCTAssertEqual(layer.down.inputTransforms.count, options.onlineDownHadamard ? 1 : 0)
        }
    }

    func testTinyModelsKeepTheirLogits() throws {
        let tokens = [3, 17, 42, 5, 77, 0, 23, 61]
        let variants: [QuaRot.Options] = [
            .init(onlineDownHadamard: false, valueHeads: false),
            .init(onlineDownHadamard: true, valueHeads: false),
            .init(onlineDownHadamard: true, valueHeads: true),
        ]
        for family in ModelConfig.Family.allCases {
            let original = try Self.tinyWeights(family, seed: 7)
            let before = Self.logits(original, tokens)
            let snapshot = Tensor(shape: original.embedding.shape, values: Array(original.embedding.buffer))
            for options in variants {
                let rotated = try QuaRot.rotate(original, seed: 1234, options: options)
                checkRotated(original, rotated, options: options)
                let after = Self.logits(rotated, tokens)
                let rel = Self.relativeDifference(before, after)
                print("QuaRot tiny \(family) \(options): max relative logit difference \(rel)")
                XCTAssertLessThan(rel, 1e-4, "\(family) \(options)")
            }
            XCTAssertEqual(Self.maxAbsDifference(snapshot, original.embedding), 0, "original left unchanged")
        }
    }

    func testUntiedModelKeepsItsLogits() throws {
        let tokens = [9, 1, 44, 70, 12, 33]
        let original = try Self.tinyWeights(.llama, seed: 5, tied: false)
        let rotated = try QuaRot.rotate(original, seed: 99)
        checkRotated(original, rotated, options: QuaRot.Options())
        let rel = Self.relativeDifference(Self.logits(original, tokens), Self.logits(rotated, tokens))
        print("QuaRot tiny untied llama: max relative logit difference \(rel)")
        XCTAssertLessThan(rel, 1e-4)
    }

    /// Each piece is needed: without the online Hadamard the folded W_down H_f gives other
    /// logits, and the value-head rotation changes v_proj and o_proj.
    func testRotationsAreNotTrivial() throws {
        let tokens = [3, 17, 42, 5, 77]
        let original = try Self.tinyWeights(.qwen2, seed: 8)
        let before = Self.logits(original, tokens)
        let rotated = try QuaRot.rotate(original, seed: 4)
        for layer in rotated.layers { layer.down.inputTransforms = [] }
        XCTAssertGreaterThan(Self.relativeDifference(before, Self.logits(rotated, tokens)), 1e-2)

        let plain = try QuaRot.rotate(original, seed: 4, options: .init(onlineDownHadamard: true, valueHeads: false))
        let heads = try QuaRot.rotate(original, seed: 4, options: .init(onlineDownHadamard: true, valueHeads: true))
        XCTAssertGreaterThan(Self.maxAbsDifference(plain.layers[0].qkv.weight.dense, heads.layers[0].qkv.weight.dense), 1e-3)
        XCTAssertGreaterThan(Self.maxAbsDifference(plain.layers[0].output.weight.dense, heads.layers[0].output.weight.dense), 1e-3)
        XCTAssertGreaterThan(Self.maxAbsDifference(plain.layers[0].qkv.bias!, heads.layers[0].qkv.bias!), 1e-4)
    }

    func testSeedChangesTheRotation() throws {
        let original = try Self.tinyWeights(.llama, seed: 3)
        let a = try QuaRot.rotate(original, seed: 1), b = try QuaRot.rotate(original, seed: 2)
        let c = try QuaRot.rotate(original, seed: 1)
        XCTAssertGreaterThan(Self.maxAbsDifference(a.embedding, b.embedding), 1e-3)
        XCTAssertEqual(Self.maxAbsDifference(a.embedding, c.embedding), 0)
    }

    func testSmolLM2KeepsItsLogits() throws {
        _ = try TestPaths.require(TestPaths.smolLM2GGUF)
        let start = Date()
        let checkpoint = try Checkpoint.open(TestPaths.smolLM2GGUF.path)
        let original = try DecoderWeights(config: checkpoint.config, source: checkpoint.weights)
        let loaded = Date()
        let tokens = [1, 9690, 28, 2683, 314, 260, 3575, 30]
        let before = Self.logits(original, tokens)
        let rotated = try QuaRot.rotate(original, seed: 20_250_213)
        let rotatedAt = Date()
        checkRotated(original, rotated, options: QuaRot.Options())
        let after = Self.logits(rotated, tokens)
        let rel = Self.relativeDifference(before, after)
        print("QuaRot SmolLM2: max relative logit difference \(rel) (load \(loaded.timeIntervalSince(start)) s, "
              + "rotate \(rotatedAt.timeIntervalSince(loaded)) s, total \(Date().timeIntervalSince(start)) s)")
        XCTAssertLessThan(rel, 1e-4)
    }

    /// The per-head rotation of queries and keys after RoPE leaves scores, so logits, unchanged
    /// in the inference decoder and logits and every gradient in the training decoder (whose
    /// backward applies the transpose); with the KV cache quantized it changes what is cached.
    func testQueryKeyHeadRotationKeepsTheFunctionAndItsGradients() throws {
        let tokens = [3, 17, 42, 5, 77, 0, 23, 61]
        for family in ModelConfig.Family.allCases {
            let weights = try Self.tinyWeights(family, seed: 5)
            let h = try HadamardTransform(size: weights.config.headDim)
            let before = Self.logits(weights, tokens)
            for layer in weights.layers { layer.headRotation = h }
            XCTAssertLessThan(Self.relativeDifference(before, Self.logits(weights, tokens)), 1e-5, "\(family) inference")

            let decoder = try TrainableDecoder(config: weights.config, source: InMemoryWeights(QuaRot.namedCopies(weights)))
            var rng = SeededRNG(seed: 9)
            let dLogits = Tensor(shape: [2 * tokens.count, weights.config.vocabSize])
            rng.fillNormal(dLogits)
            func run() -> (logits: [Float], grads: [[Float]]) {
                decoder.zeroGradients()
                let logits = Array(decoder.forward(tokens: tokens + tokens.reversed(), batch: 2, length: tokens.count).buffer)
                decoder.backward(dLogits: dLogits)
                return (logits, decoder.parameters.map(\.grad.array))
            }
            let plain = run()
            decoder.headRotation = h
            let rotated = run()
            let scale = plain.logits.map(abs).max()!
            XCTAssertLessThan(zip(plain.logits, rotated.logits).map { abs($0 - $1) }.max()! / scale, 1e-5, "\(family) training logits")
            for (p, (a, b)) in zip(decoder.parameters, zip(plain.grads, rotated.grads)) {
                let m = max(a.map(abs).max()!, 1e-6)
                XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()! / m, 1e-4, "\(family) gradient of \(p.name)")
            }

            weights.installActivationQuant(try XCTUnwrap(ActivationQuantSpec(scheme: try QuantScheme.parse("w4kv4"))))
            let quantizedRotated = Self.logits(weights, tokens)
            for layer in weights.layers { layer.headRotation = nil }
            XCTAssertGreaterThan(Self.maxAbsDifference(quantizedRotated, Self.logits(weights, tokens)), 1e-4, "\(family): KV4 caches rotated keys")
        }
    }
}
