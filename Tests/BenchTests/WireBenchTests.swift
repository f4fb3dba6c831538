import Formats
import Cluster
import Eval
import Foundation
@testable import Bench
import Quant
import Tensors
import TestSupport
import Train
import XCTest

/// `bench wire` in this process on a tiny teacher, and its run report from made-up runs.
final class WireBenchTests: XCTestCase {
    func testBytesAndBiasBeforeTraining() throws {
        let dir = try makeScratchDirectory("rqat-wire-bench")
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 12)
        Threads.set(1)
        var o = WireBench.Options()
        o.teacher = dir.appendingPathComponent("teacher").path
        o.scheme = try QuantScheme.parse("w3g128")
        o.data = dir.appendingPathComponent("train.jsonl").path
        o.heldoutCount = 4
        o.seqLen = 48
        o.wireBatches = 2
        o.ks = [4, 100_000]
        o.ms = [8]
        var lines: [String] = []
        let bench = try WireBench(o, log: { lines.append($0) })
        XCTAssertEqual(bench.train.examples.count, 8)
        XCTAssertEqual(bench.heldout.count, 4)

        let (untrained, measured) = try bench.measureBeforeTraining { lines.append($0) }
        XCTAssertGreaterThan(untrained.mean, 0)
        let wire = try XCTUnwrap(measured)
        XCTAssertEqual(wire.codecs, ["raw", "zstd", "shuffled-zstd"])
        // full fp32 and bf16, top-4 in fp16 and bf16 (top-100000 exceeds the vocabulary), sampled-8.
        XCTAssertEqual(wire.variants.map { "\($0.biases[0].shared.encoding) \($0.biases[0].valueType)" },
                       ["full fp32", "full bf16", "top-4 fp16", "top-4 bf16", "sampled-8 uint8"])
        XCTAssertEqual(wire.batches, 2)
        for variant in wire.variants {
            XCTAssertEqual(variant.bytes.map(\.codec), wire.codecs)
            XCTAssertNil(variant.bytes[0].ratioToRaw)
            for b in variant.bytes { XCTAssertTrue(b.bytesPerToken > 0 && b.tokensPerS > 0, "\(b)") }
            // Forward KL for every encoding; reverse KL and JSD(1/2) only where the teacher's
            // probabilities travel (not sampled draws).
            let sampledOnly = variant.biases[0].shared.m != nil
            XCTAssertEqual(variant.biases.map(\.divergence), sampledOnly ? ["kd-fkl"] : ["kd-fkl", "kd-rkl", "kd-jsd"])
            XCTAssertEqual(variant.biases.map(\.jsdBeta), sampledOnly ? [nil] : [nil, nil, 0.5])
            for b in variant.biases { XCTAssertEqual(b.positions, wire.positions) }
            XCTAssertEqual(variant.biases[0].kdFull, wire.fullKL, accuracy: 1e-12)
        }
        for d in 1...2 {
            let full = wire.variants[0].biases[d], top = wire.variants[2].biases[d]
            XCTAssertEqual(full.bias, 0, accuracy: 1e-6, full.divergence)
            XCTAssertEqual(full.gradCosine, 1, accuracy: 1e-6, full.divergence)
            XCTAssertGreaterThan(full.kdFull, 0, full.divergence)
            XCTAssertEqual(top.kdFull, full.kdFull, accuracy: 1e-12, "one reference per divergence")
            XCTAssertLessThan(top.bias, 0, "\(top.divergence): bucketing loses divergence")
            // Reverse KL weighs each tail token by log(q_j / p_j), which one bucket cannot see:
            // its bucketed gradient is further from the full one (0.41 here) than forward KL's.
            XCTAssertGreaterThan(top.gradCosine, 0, top.divergence)
        }
        let full = wire.variants[0].biases[0], top = wire.variants[2].biases[0], sampled = wire.variants[4].biases[0]
        XCTAssertEqual(full.bias, 0, accuracy: 1e-6)
        XCTAssertEqual(full.gradCosine, 1, accuracy: 1e-6)
        XCTAssertNil(full.tailMass)
        XCTAssertLessThan(top.bias, 0)
        XCTAssertEqual(top.shared.k, 4)
        XCTAssertNotNil(top.tailMass)
        XCTAssertEqual(sampled.shared.m, 8)
        XCTAssertNotNil(sampled.distinctIds)
        XCTAssertNil(sampled.tailMass)
        // Raw top-k: k uint16 ids + k fp16 log-probs + an fp32 tail mass per position, plus headers.
        XCTAssertEqual(wire.variants[2].bytes[0].bytesPerToken, 4 * 4 + 4, accuracy: 10)

        XCTAssertThrowsError(try bench.check(runs: [.topK(100_000)])) { XCTAssertTrue("\($0)".contains("top-100000"), "\($0)") }
        XCTAssertGreaterThan(try bench.trainedPositions(), 0)
    }

    func kdRun(_ encoding: SignalEncoding, sums: [Double], bytes: Double) -> KDRun {
        KDRun(encoding: encoding, heldoutSums: sums, heldoutCounts: [2, 2], tokensPerSecond: 100, bytesPerToken: bytes,
              trainedPositions: 40, firstLoss: .nan, lastLoss: 0.5, seconds: 3, waitSeconds: 1)
    }

    func testRunReportAgainstTheFullRunAndTheTarget() throws {
        let untrained = HeldoutKL(sums: [2, 2], counts: [2, 2])               // 1.0 per position
        let runs = [kdRun(.full, sums: [1, 1], bytes: 9000),                    // 0.5
                    kdRun(.topK(16), sums: [1.02, 1], bytes: 50),               // 0.505: +1%
                    kdRun(.sampled(64), sums: [1.2, 1.2], bytes: 20)]           // 0.6: +20%
        var o = WireBench.Options()
        let report = WireBench.report(runs, untrained: untrained, options: o)
        XCTAssertEqual(report.untrained.heldoutKL, 1)
        XCTAssertEqual(report.untrained.positions, 4)
        XCTAssertEqual(try jsonObject(report.untrained.jsonLine())["encoding"] as? String, "untrained")

        let top = report.runs[1]
        XCTAssertEqual(top.shared.k, 16)
        XCTAssertEqual(top.heldoutKL, 0.505, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(top.relativeToFull), 0.01, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(top.gainFractionOfFull), 0.99, accuracy: 1e-12)
        let (d, se) = runs[1].heldoutKL.difference(from: runs[0].heldoutKL)
        XCTAssertEqual(try XCTUnwrap(top.relativeToFullSE), se / 0.5, accuracy: 1e-12)
        XCTAssertEqual(d, 0.005, accuracy: 1e-12)
        XCTAssertEqual(report.runs[0].relativeToFull, 0)
        XCTAssertEqual(report.runs.map(\.valueType), ["fp32", "fp16", "uint8"])
        // A NaN becomes null in the line, as JSON has no NaN.
        XCTAssertTrue(try jsonObject(top.jsonLine())["first_loss"] is NSNull)

        // Both under 300 B/token; only top-16 within 2% of the full run.
        XCTAssertEqual(report.target, WireTargetRecord(targetBytesPerToken: 300, targetRelative: 0.02, met: true,
                                                       encoding: "top-16", bytesPerToken: 50, relativeToFull: 0.505 / 0.5 - 1))
        o.targetRelative = 0.005
        let strict = WireBench.report(runs, untrained: untrained, options: o).target
        XCTAssertEqual(strict?.met, false)
        XCTAssertEqual(strict?.encoding, "top-16", "the closest under the byte limit")
        o.targetBytes = 10
        XCTAssertNil(WireBench.report(runs, untrained: untrained, options: o).target?.encoding)
        XCTAssertNil(WireBench.report([runs[1]], untrained: untrained, options: o).target, "no full run to compare with")
    }
}
