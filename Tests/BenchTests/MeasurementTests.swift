import Foundation
@testable import Bench
import Formats
import Quant
import Tensors
import TestSupport
import XCTest

/// `bench decode` and `bench train` measured on tiny models: sane positive figures, checked from
/// the records, and the records' --json lines.
final class MeasurementTests: XCTestCase {
    func testDecodeOnATinyModel() throws {
        let dir = try makeScratchDirectory("rqat-bench-decode")
        try TinyModels.writeModel(at: dir, seed: 5)
        Threads.set(1)
        let bench = try DecodeBench(model: dir.path)
        var options = DecodeBench.Options()
        options.promptTokens = 12
        options.decodeTokens = 3
        options.batch = 2
        options.repeats = 2
        options.bandwidthBytes = 4 << 20   // the figures need not be memory-bound here, only sane
        let result = bench.run(options)

        // Tied LM head (V x 32) + final norm, and per layer: 2 norms, q/k norms (8 each),
        // q/k/v (64 x 32), o (32 x 32), gate/up (128 x 32), down (32 x 64); fp32.
        let v = bench.model.config.vocabSize
        XCTAssertEqual(result.weightBytes, 4 * (v * 32 + 32 + 2 * (2 * 32 + 2 * 8 + 64 * 32 + 32 * 32 + 128 * 32 + 32 * 64)))

        let m = result.memoryBandwidth
        XCTAssertEqual(m.measurements, 1 + 2 * 2, "one before the first decode and one after each")
        for x in [m.copyGBPerS, m.readGBPerS] { XCTAssertTrue(x.isFinite && x > 0, "\(m)") }
        XCTAssertTrue(m.copyGBPerSMin <= m.copyGBPerS && m.copyGBPerS <= m.copyGBPerSMax, "\(m)")
        XCTAssertEqual(result.prefill.promptTokens, 12)
        XCTAssertGreaterThan(result.prefill.tokensPerS, 0)

        XCTAssertEqual(result.decodes.map(\.batch), [1, 2])
        for d in result.decodes {
            XCTAssertTrue(d.tokensPerS > 0 && d.tokensPerS.isFinite, "\(d)")
            XCTAssertTrue(d.tokensPerSMin <= d.tokensPerS && d.tokensPerS <= d.tokensPerSMax, "\(d)")
            XCTAssertEqual(d.impliedGBPerS, d.tokensPerS / Double(d.batch) * Double(result.weightBytes) / 1e9, accuracy: 1e-12)
            XCTAssertGreaterThan(d.fractionOfCopyBandwidth, 0)
        }
        XCTAssertNil(result.decodes[0].speedupOverBatch1)
        let batched = result.decodes[1]
        XCTAssertEqual(try XCTUnwrap(batched.speedupOverBatch1), batched.tokensPerS / result.decodes[0].tokensPerS, accuracy: 1e-12)

        // The --json lines carry the documented fields, the speedup only for batches above 1.
        let single = try jsonObject(result.decodes[0].jsonLine()), line = try jsonObject(batched.jsonLine())
        XCTAssertEqual(line["name"] as? String, "decode")
        XCTAssertEqual(Set(line.keys).subtracting(single.keys),
                       ["speedup_over_batch_1", "speedup_over_batch_1_per_round_min",
                        "speedup_over_batch_1_per_round_median", "speedup_over_batch_1_per_round_max"])
        XCTAssertTrue(Set(single.keys).isSuperset(of: ["batch", "decode_tokens", "tokens_per_s", "tokens_per_s_min", "tokens_per_s_max",
                                                        "implied_gb_per_s", "fraction_of_copy_bandwidth", "fraction_of_read_bandwidth",
                                                        "fraction_of_copy_bandwidth_of_medians", "repeats", "threads"]))
        XCTAssertEqual(try jsonObject(m.jsonLine())["name"] as? String, "memory_bandwidth")
    }

    /// hidden 32, 1 layer, 2 heads / 1 KV head of 16, MLP 64, vocab 64, batch 2 x 16.
    let tinyCase = TrainBench.Case(name: "test", config: ModelConfig(
        modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 1, numAttentionHeads: 2,
        numKeyValueHeads: 1, headDim: 16, vocabSize: 64, rmsNormEps: 1e-6, ropeTheta: 10_000,
        maxPositionEmbeddings: 64, tieWordEmbeddings: true), batch: 2, length: 16)

    func testTrainingFLOPsPerToken() {
        // Per layer: q/k/v 32 x (32 + 2 x 16), o 32 x 32, MLP 3 x 32 x 64 = 9216; LM head 64 x 32;
        // attention 1 layer x 16 positions x 32 query width.
        XCTAssertEqual(TrainBench.trainingFLOPsPerToken(tinyCase.config, length: 16), 6 * (9216 + 2048) + 6 * 512)
    }

    func testTrainStepAndItsFakeQuantCost() throws {
        Threads.set(1)
        let plain = try TrainBench.step(tinyCase, steps: 2)
        XCTAssertEqual(plain.shape, "test")
        XCTAssertEqual(plain.batch * plain.seqLen, 32)
        for x in [plain.tokensPerS, plain.gflopPerS, plain.sgemmGflopPerS, plain.fractionOfSgemm, plain.activationMB] {
            XCTAssertTrue(x.isFinite && x > 0, "\(plain)")
        }
        XCTAssertEqual(plain.gflopPerS, plain.tokensPerS * TrainBench.trainingFLOPsPerToken(tinyCase.config, length: 16) / 1e9,
                       accuracy: 1e-9)
        XCTAssertEqual(plain.fractionOfSgemm, plain.gflopPerS / plain.sgemmGflopPerS, accuracy: 1e-12)

        let qat = try TrainBench.qatStep(tinyCase, steps: 2, scheme: try QuantScheme.parse("w4g32"), mode: .ste, plain: plain)
        XCTAssertEqual(qat.scheme, "w4g32-asym")
        XCTAssertEqual(qat.mode, "ste")
        XCTAssertGreaterThan(qat.tokensPerS, 0)
        XCTAssertEqual(qat.overheadFraction, plain.tokensPerS / qat.tokensPerS - 1, accuracy: 1e-12)
        let line = try jsonObject(qat.jsonLine())
        XCTAssertEqual(Set(line.keys), ["name", "shape", "batch", "seq_len", "scheme", "mode", "tokens_per_s", "overhead_fraction", "threads"])
    }
}

func jsonObject(_ line: String) throws -> [String: Any] {
    try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
}
