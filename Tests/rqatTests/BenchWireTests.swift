import Foundation
import TestSupport
import XCTest

/// `rqat bench wire --json` end to end on a tiny teacher and its W3G128 fake-quant copy.
final class BenchWireTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("rqat-bench-wire")
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 16)
    }

    func testEveryEncodingIsMeasuredWithSaneFigures() throws {
        let rqat = try BuiltProducts.executable("rqat")
        let jsonOut = dir.appendingPathComponent("bench.jsonl")
        let result = try runProcess(rqat, [
            "bench", "wire", "--json", "--teacher", dir.appendingPathComponent("teacher").path, "--scheme", "w3g128",
            "--data", dir.appendingPathComponent("train.jsonl").path, "--heldout-count", "4", "--seq-len", "48", "--rows", "2",
            "--wire-batches", "3", "--steps", "3", "--lr", "3e-3", "--warmup", "0", "--threads", "1",
            "--json-out", jsonOut.path,
        ])
        XCTAssertEqual(result.status, 0, result.output)
        let objects = result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        XCTAssertEqual(objects.count, result.stdout.split(separator: "\n").count, "every stdout line is JSON: \(result.stdout)")
        // --json-out holds the same lines.
        XCTAssertEqual(try String(contentsOf: jsonOut, encoding: .utf8).split(separator: "\n").count, objects.count)

        func named(_ name: String) -> [[String: Any]] { objects.filter { $0["name"] as? String == name } }
        func number(_ o: [String: Any], _ key: String) -> Double {
            guard let v = o[key] as? Double, v.isFinite else { XCTFail("\(key) missing or not finite in \(o)"); return .nan }
            return v
        }
        let encodings = ["full", "top-16", "top-64", "top-256", "sampled-16", "sampled-64"]

        // 1. Bytes per token: every encoding and codec; smaller signals take fewer bytes; a codec never adds.
        let wire = named("wire_bytes")
        func bytes(_ encoding: String, _ type: String, _ codec: String) -> Double {
            guard let o = wire.first(where: { $0["encoding"] as? String == encoding && $0["value_type"] as? String == type
                                              && $0["codec"] as? String == codec }) else {
                XCTFail("no wire_bytes for \(encoding) \(type) \(codec)"); return .nan
            }
            XCTAssertGreaterThan(number(o, "tokens_per_s"), 0)
            return number(o, "bytes_per_token")
        }
        for codec in ["raw", "zstd", "shuffled-zstd"] {
            XCTAssertLessThan(bytes("top-16", "fp16", codec), bytes("top-64", "fp16", codec), codec)
            XCTAssertLessThan(bytes("top-64", "fp16", codec), bytes("top-256", "fp16", codec), codec)
            XCTAssertLessThan(bytes("top-256", "fp16", codec), bytes("full", "fp32", codec), codec)
            XCTAssertLessThan(bytes("full", "bf16", codec), bytes("full", "fp32", codec), codec)
            XCTAssertLessThan(bytes("sampled-16", "uint8", codec), bytes("sampled-64", "uint8", codec), codec)
            for (e, t) in [("full", "fp32"), ("top-64", "fp16"), ("top-256", "bf16"), ("sampled-64", "uint8")] where codec != "raw" {
                XCTAssertLessThanOrEqual(bytes(e, t, codec), bytes(e, t, "raw"), "\(e) \(t) \(codec)")
            }
        }
        // Raw sizes follow from the format: k fp16 log-probs + k uint16 ids + an fp32 tail mass per token,
        // plus headers shared by the batch's positions.
        XCTAssertEqual(bytes("top-64", "fp16", "raw"), 64 * 4 + 4, accuracy: 10)
        XCTAssertEqual(Set(wire.compactMap { $0["encoding"] as? String }), Set(encodings))

        // 2. Bias: top-k + tail never overestimates (bucketing loses information); sampled is unbiased.
        let bias = named("kd_bias")
        XCTAssertEqual(Set(bias.compactMap { $0["encoding"] as? String }), Set(encodings))
        // Every encoding for forward KL; reverse KL and JSD where teacher probabilities travel.
        XCTAssertEqual(Set(bias.map { "\($0["encoding"]!) \($0["value_type"]!) \($0["divergence"]!)" }).count, bias.count)
        XCTAssertEqual(bias.filter { $0["divergence"] as? String == "kd-fkl" }.count, 10)
        for divergence in ["kd-rkl", "kd-jsd"] {
            XCTAssertEqual(Set(bias.filter { $0["divergence"] as? String == divergence }.compactMap { $0["encoding"] as? String }),
                           ["full", "top-16", "top-64", "top-256"], divergence)
        }
        for o in bias {
            let encoding = o["encoding"] as! String, b = number(o, "bias"), se = number(o, "bias_se")
            XCTAssertGreaterThan(number(o, "kd_full"), 0, "\(o)")
            if encoding.hasPrefix("top-") {
                XCTAssertLessThanOrEqual(b, 0.01, "\(o)")
                // The tiny random teacher leaves 80% of its mass outside its top 16; reverse KL's
                // bucketed gradient is then only loosely aligned with the full one.
                XCTAssertGreaterThan(number(o, "grad_cosine"), o["divergence"] as? String == "kd-fkl" ? 0.5 : 0, "\(o)")
                let tail = number(o, "tail_mass")
                XCTAssertTrue(tail >= 0 && tail < 1, "\(o)")
            } else if encoding.hasPrefix("sampled-") {
                XCTAssertLessThanOrEqual(abs(b), 4 * se + 1e-3, "\(o)")
                let distinct = number(o, "distinct_ids")
                XCTAssertTrue(distinct >= 1 && distinct <= Double(o["m"] as? Int ?? 0), "\(o)")
                XCTAssertGreaterThan(number(o, "grad_cosine"), 0, "\(o)")
            } else if o["value_type"] as? String == "fp32" {
                XCTAssertEqual(b, 0, accuracy: 1e-6, "\(o)")
                XCTAssertEqual(number(o, "grad_cosine"), 1, accuracy: 1e-6, "\(o)")
            }
        }

        // 3. Runs: the untrained student and one run per encoding, each with a finite held-out KL.
        let runs = named("kd_run")
        XCTAssertEqual(Set(runs.compactMap { $0["encoding"] as? String }), Set(encodings + ["untrained"]))
        for o in runs {
            XCTAssertGreaterThan(number(o, "heldout_kl"), 0, "\(o)")
            if o["encoding"] as? String != "untrained" {
                XCTAssertGreaterThan(number(o, "tokens_per_s"), 0)
                XCTAssertGreaterThan(number(o, "bytes_per_token"), 0)
                _ = number(o, "relative_to_full")
            }
        }
        let full = runs.first { $0["encoding"] as? String == "full" }!
        XCTAssertEqual(number(full, "relative_to_full"), 0, accuracy: 1e-12)
        // lr 3e-3 on a tiny model: three steps must move the student toward the teacher.
        XCTAssertLessThan(number(full, "heldout_kl"), number(full, "heldout_kl_untrained"))
        XCTAssertEqual(named("wire_target").count, 1)
    }
}
