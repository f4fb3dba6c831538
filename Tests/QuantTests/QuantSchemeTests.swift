import Quant
import Formats
import Model
import Tensors
import TestSupport
import XCTest

final class QuantSchemeTests: XCTestCase {
    func testParsesTheFieldsNotation() throws {
        XCTAssertEqual(try QuantScheme.parse("w3g128"), QuantScheme(weightBits: 3, groupSize: 128, symmetric: false))
        XCTAssertEqual(try QuantScheme.parse("W4G128-sym"), QuantScheme(weightBits: 4, groupSize: 128, symmetric: true))
        XCTAssertEqual(try QuantScheme.parse("w4"), QuantScheme(weightBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w8-asym"), QuantScheme(weightBits: 8))
        XCTAssertEqual(try QuantScheme.parse("w2g64"), QuantScheme(weightBits: 2, groupSize: 64))
        XCTAssertEqual(try QuantScheme.parse("w4a4kv4"), QuantScheme(weightBits: 4, activationBits: 4, kvBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w4-a8-kv8-sym"), QuantScheme(weightBits: 4, symmetric: true, activationBits: 8, kvBits: 8))
        XCTAssertEqual(try QuantScheme.parse("a8"), QuantScheme(weightBits: nil, activationBits: 8))
        // The description parses back to the same scheme.
        for text in ["w3g128", "w4g128-sym", "w4", "w4a4kv4", "a8kv4"] {
            let s = try QuantScheme.parse(text)
            XCTAssertEqual(try QuantScheme.parse(s.description), s, text)
        }
    }

    func testRejectsUnsupportedAndListsValidForms() {
        for bad in ["w5g128", "w3g100", "w4a2", "kv3", "", "int4", "w4g", "w4w4", "sym", "w3g128-sym-asym"] {
            XCTAssertThrowsError(try QuantScheme.parse(bad), bad) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("Valid:") && message.contains("w3g128"), message)
            }
        }
    }

    /// `w4a4kv4` runs: QAT installs the activation and KV-cache fake-quantizers on the training
    /// decoder, its inference view (what rollouts and curves decode with) runs the same ones, and
    /// a checkpoint saved with the scheme records them, so a loaded model runs them too.
    func testActivationAndKVSchemesRunInTrainingInferenceAndCheckpoints() throws {
        // Every matrix has a multiple of 32 rows, as GPTQ's packed layout needs.
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 4, headDim: 8, vocabSize: 40, tieWordEmbeddings: true)
        let scheme = try QuantScheme.parse("w4a4kv4")
        let spec = try XCTUnwrap(ActivationQuantSpec(scheme: scheme))
        XCTAssertNil(ActivationQuantSpec(scheme: try QuantScheme.parse("w4g32")), "weight-only: nothing at run time")
        let tokens = [3, 17, 5, 9, 22, 1, 30, 8]
        func trainingLogits(_ d: TrainableDecoder) -> [Float] { d.forward(tokens: tokens, batch: 1, length: tokens.count).array }
        func decodedLogits(_ weights: DecoderWeights) -> [Float] {
            let decoder = Decoder(weights: weights)
            let cache = decoder.makeCache(capacities: [tokens.count])
            return decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: cache, logitRows: Array(0..<tokens.count)).array
        }

        let weightOnly = TrainableDecoder(config: config, seed: 1)
        weightOnly.weightQuantizer = try FakeQuantizer(decoder: weightOnly, scheme: scheme, mode: .ste)
        let quantized = TrainableDecoder(config: config, seed: 1)
        quantized.weightQuantizer = try FakeQuantizer(decoder: quantized, scheme: scheme, mode: .ste)
        quantized.installActivationQuant(spec)
        let wo = trainingLogits(weightOnly), aq = trainingLogits(quantized)
        XCTAssertGreaterThan(zip(wo, aq).map { abs($0 - $1) }.max()!, 1e-3, "4-bit activations change the logits")
        // The decode path (KV cache, one token at a time) against the training forward, both
        // quantizing activations and the cache: the same model, rounding aside.
        let decoded = decodedLogits(quantized.inferenceWeights())
        let scale = aq.map(abs).max()!
        XCTAssertLessThan(zip(aq, decoded).map { abs($0 - $1) }.max()! / scale, 1e-2, "training forward against its decoding view")
        XCTAssertLessThan(zip(aq, decoded).map { abs($0 - $1) }.max()!, zip(aq, wo).map { abs($0 - $1) }.max()!)

        // Saved and loaded: the checkpoint records the spec and the loaded model runs it.
        let dir = try makeScratchDirectory("rqat-w4a4kv4")
        let snapshot = quantized.weightQuantizer as! FakeQuantizer
        var full: [String: Tensor] = [:]
        let packed = snapshot.exportQuantized()
        for p in quantized.parameters where packed[p.name] == nil { full[p.name] = p.value }
        try QuantizedCheckpoint.save(directory: dir, config: config, fullPrecision: full, quantized: packed, scheme: scheme, method: "test")
        let opened = try Checkpoint.open(dir.path)
        XCTAssertEqual(opened.activationQuant, spec)
        let plain = try DecoderWeights(config: config, source: opened.weights)
        let loaded = try DecoderWeights(config: config, source: opened.weights)
        loaded.installActivationQuant(try XCTUnwrap(opened.activationQuant))
        // The packed scales are fp16, the trained min/max grid's fp32: close, not bit-equal.
        func gap(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }
        let withSpec = decodedLogits(loaded), without = decodedLogits(plain)
        XCTAssertLessThan(gap(withSpec, decoded) / scale, 5e-2, "the loaded model decodes as the trained one")
        XCTAssertLessThan(gap(withSpec, decoded), gap(without, decoded), "and runs its activation quantization")
    }
}
