import Foundation
import XCTest
import Formats
import TestSupport

/// The `rqat` executable end to end: bad input gives one line on stderr naming the file and a
/// non-zero exit (never a crash), and every subcommand answers --help.
final class CLITests: XCTestCase {
    func run(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(try BuiltProducts.executable("rqat"), arguments)
    }

    func scratch() throws -> URL { try makeScratchDirectory("rqat-cli") }

    /// Exit 1, no crash, exactly one stderr line that names `path` and contains `problem`.
    func assertOneLineError(_ r: ProcessResult, names path: String, contains problem: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.crashed, "crashed: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "expected one line, got: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(path), "\(r.stderr) does not name \(path)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(problem), "\(r.stderr) does not say \(problem)", file: file, line: line)
    }

    func testTruncatedGGUF() throws {
        let real = try TestPaths.require(TestPaths.smolLM2GGUF)
        let handle = try FileHandle(forReadingFrom: real)
        let cut = try scratch().appendingPathComponent("cut.gguf")
        // Inside the metadata (the tokenizer arrays), and inside the tensor data.
        for size in [1 << 20, 50 << 20] {
            try handle.seek(toOffset: 0)
            try handle.readData(ofLength: size).write(to: cut)
            let r = try run(["info", cut.path])
            assertOneLineError(r, names: cut.path, contains: "truncated")
        }
        try handle.close()
    }

    /// A directory with a valid config whose safetensors header points past the end of the file.
    func testSafetensorsOffsetOutOfRange() throws {
        let dir = try scratch()
        try FileManager.default.copyItem(at: TestPaths.fixture("tiny-qwen3/config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        let header = #"{"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,256]}}"#
        var bytes = Data()
        var length = UInt64(header.utf8.count).littleEndian
        bytes.append(Data(bytes: &length, count: 8))
        bytes.append(Data(header.utf8))
        bytes.append(Data(count: 16))   // 16 of the promised 256 bytes
        let file = dir.appendingPathComponent("model.safetensors")
        try bytes.write(to: file)
        let r = try run(["info", dir.path])
        assertOneLineError(r, names: file.path, contains: "model.norm.weight")
    }

    func testUnknownModelType() throws {
        let dir = try scratch()
        let config = dir.appendingPathComponent("config.json")
        try Data(#"{"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#.utf8).write(to: config)
        let r = try run(["info", dir.path])
        assertOneLineError(r, names: config.path, contains: "unknown model_type")
    }

    func testMissingTokenizer() throws {
        let dir = try scratch()
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: TestPaths.fixture("tiny-qwen3/\(name)"), to: dir.appendingPathComponent(name))
        }
        let r = try run(["generate", "--model", dir.path, "--prompt", "hi", "--max-tokens", "2"])
        assertOneLineError(r, names: dir.appendingPathComponent("tokenizer.json").path, contains: "missing tokenizer")
    }

    func testMissingModelPath() throws {
        let r = try run(["info", "/nonexistent/model.gguf"])
        assertOneLineError(r, names: "/nonexistent/model.gguf", contains: "no such file")
    }

    /// Training data problems stop `rqat sft` before any weight is loaded, naming the file and line.
    func testSFTBadDataNamesFileAndLine() throws {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        let dir = try scratch()
        let cases: [(String, String)] = [
            (#"{"prompt": "a", "completion": "b"}"# + "\n" + #"{"prompt": "What is 2+2?"}"#, "line 2"),
            ("", "no examples"),
            (#"{"prompt": "a", "completion": "# + "\"" + String(repeating: "word ", count: 400) + "\"}", "longer than"),
        ]
        for (i, (content, problem)) in cases.enumerated() {
            let data = dir.appendingPathComponent("data\(i).jsonl")
            try Data(content.utf8).write(to: data)
            let r = try run(["sft", "--model", TestPaths.smolLM2GGUF.path, "--data", data.path,
                             "--out", dir.appendingPathComponent("run\(i)").path, "--seq-len", "128", "--batch-tokens", "256"])
            assertOneLineError(r, names: data.path, contains: problem)
        }
    }

    /// `rqat ptq` refuses an unknown scheme (listing the valid forms) and a calibration file
    /// with no usable sequence (naming it).
    func testPTQBadSchemeAndEmptyCalibration() throws {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        let dir = try scratch()
        let bad = try run(["ptq", "--model", TestPaths.smolLM2GGUF.path, "--scheme", "w5g100", "--out", dir.appendingPathComponent("q").path])
        assertOneLineError(bad, names: "w5g100", contains: "Valid:")
        let calib = dir.appendingPathComponent("empty.txt")
        try Data("hi\n".utf8).write(to: calib)
        let empty = try run(["ptq", "--model", TestPaths.smolLM2GGUF.path, "--scheme", "w3g128", "--method", "gptq",
                             "--calib", calib.path, "--out", dir.appendingPathComponent("q").path])
        assertOneLineError(empty, names: calib.path, contains: "no usable calibration sequence")
    }

    /// `rqat ptq` leaves OUT/ptq-report.json: every matrix's relative output error and their
    /// sum, the figure stderr quotes (scripts/ptq-table.sh reads the report).
    func testPTQWritesItsReport() throws {
        let dir = try scratch()
        try TinyModels.writeModel(at: dir.appendingPathComponent("model"), seed: 3, headDim: 32)
        let calib = dir.appendingPathComponent("calib.txt")
        try (0..<16).map { "Line \($0): \(12 + $0) apples and \(3 + $0) pears are sold on Monday." }.joined(separator: "\n")
            .write(to: calib, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("q")
        let r = try run(["ptq", "--model", dir.appendingPathComponent("model").path, "--scheme", "w4g32", "--method", "gptq",
                         "--calib", calib.path, "--calib-samples", "4", "--seq-len", "32", "--out", out.path, "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("ptq-report.json"))) as? [String: Any])
        let matrices = try XCTUnwrap(report["matrices"] as? [[String: Any]])
        XCTAssertEqual(matrices.count, 14)
        let errors = matrices.compactMap { $0["relative_output_error"] as? Double }
        XCTAssertEqual(errors.count, 14)
        let sum = try XCTUnwrap(report["sum_relative_output_error"] as? Double)
        XCTAssertEqual(sum, errors.reduce(0, +), accuracy: 1e-9)
        XCTAssertEqual(report["calibration_windows"] as? Int, 4)
        XCTAssertTrue(r.stderr.contains(String(format: "relative output errors over 14 matrices: %.4f", sum)), r.stderr)
    }

    /// `w4a4kv4` end to end: `sft --qat` trains with 4-bit activations and KV cache and exports a
    /// checkpoint that records them; `ptq --scheme w4a4kv4` writes one too; `rqat ppl` loads
    /// both and runs them, and the activation quantization costs perplexity against plain W4.
    func testActivationAndKVQuantizedSchemesRunEndToEnd() throws {
        let dir = try scratch()
        let model = dir.appendingPathComponent("m")
        // Head dim 32: every matrix has a multiple of 32 rows, as GPTQ's packed layout needs.
        try TinyModels.writeModel(at: model, seed: 1, headDim: 32)
        let data = dir.appendingPathComponent("d.jsonl")
        try TinyModels.writeArithmeticData(to: data)
        let qat = try run(["sft", "--model", model.path, "--data", data.path, "--out", dir.appendingPathComponent("o").path,
                           "--qat", "w4a4kv4", "--steps", "2"])
        XCTAssertEqual(qat.status, 0, qat.output)
        XCTAssertTrue(qat.stderr.contains("activations quantized at run time: a4-asym at every linear input, KV cache a4-asym-g32"), qat.stderr)
        func quantizationConfig(_ path: URL) throws -> [String: Any] {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: path.appendingPathComponent("config.json"))) as! [String: Any]
            return object["quantization_config"] as! [String: Any]
        }
        let recorded = try XCTUnwrap(quantizationConfig(dir.appendingPathComponent("o/quantized"))["rqat_activation_quant"] as? [String: Any])
        XCTAssertEqual(recorded["activation_bits"] as? Int, 4)
        XCTAssertEqual(recorded["kv_bits"] as? Int, 4)
        let text = dir.appendingPathComponent("text.txt")
        try "Tom has 3 apples and gets 4 more, so he has 7 apples.\nA train leaves at 9 and arrives at 11.\n".write(to: text, atomically: true, encoding: .utf8)
        var ppl: [String: Double] = [:]
        for scheme in ["w4a4kv4", "w4"] {
            let out = dir.appendingPathComponent(scheme)
            let ptq = try run(["ptq", "--model", model.path, "--scheme", scheme, "--method", "rtn", "--out", out.path])
            XCTAssertEqual(ptq.status, 0, ptq.output)
            let measured = try run(["ppl", "--model", out.path, "--data", text.path])
            XCTAssertEqual(measured.status, 0, measured.output)
            let figure = measured.stdout.split(separator: " ").drop { $0 != "perplexity" }.dropFirst().first
            ppl[scheme] = try XCTUnwrap(figure.flatMap { Double($0) }, measured.stdout)
        }
        XCTAssertNotEqual(ppl["w4a4kv4"], ppl["w4"], "the loaded w4a4kv4 model quantizes its activations: \(ppl)")
    }

    /// A tiny model (head dim 32, so the Hadamard sizes exist) and a text to calibrate and score on.
    func transformFixture() throws -> (dir: URL, model: URL, text: URL) {
        let dir = try scratch()
        let model = dir.appendingPathComponent("m")
        try TinyModels.writeModel(at: model, seed: 1, headDim: 32)
        let text = dir.appendingPathComponent("text.txt")
        try (0..<8).map { "Tom has \($0 + 2) apples and gets \($0 + 3) more, so he has \(2 * $0 + 5) apples in all." }
            .joined(separator: "\n").write(to: text, atomically: true, encoding: .utf8)
        return (dir, model, text)
    }

    func perplexity(_ model: URL, on text: URL) throws -> Double {
        let measured = try run(["ppl", "--model", model.path, "--data", text.path])
        XCTAssertEqual(measured.status, 0, measured.output)
        return try XCTUnwrap(measured.stdout.split(separator: " ").drop { $0 != "perplexity" }.dropFirst().first.flatMap { Double($0) })
    }

    /// `ptq --method quarot`: the rotated model, quantized at W8A8KV8 (near lossless), keeps the
    /// FP model's perplexity; its checkpoint records the online down_proj Hadamard, without which
    /// (the record removed) the loaded model is another function. The report has the outliers
    /// before and after the rotation.
    func testQuaRotCheckpointRecordsItsOnlineRotation() throws {
        let (dir, model, text) = try transformFixture()
        let out = dir.appendingPathComponent("quarot")
        let ptq = try run(["ptq", "--model", model.path, "--scheme", "w8a8kv8", "--method", "quarot", "--calib", text.path,
                           "--seq-len", "32", "--out", out.path])
        XCTAssertEqual(ptq.status, 0, ptq.output)
        XCTAssertTrue(ptq.stderr.contains("activation outliers after the rotation"), ptq.stderr)
        let fp = try perplexity(model, on: text), rotated = try perplexity(out, on: text)
        XCTAssertEqual(rotated, fp, accuracy: 0.05 * fp, "QuaRot + W8A8KV8 (clips 0.9, 0.95) keeps the function")

        let configURL = out.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        var q = config["quantization_config"] as! [String: Any]
        XCTAssertEqual((q["rqat_rotation"] as? [String: Any])?["online_down_hadamard"] as? Bool, true)
        XCTAssertEqual((q["rqat_rotation"] as? [String: Any])?["online_qk_hadamard"] as? Bool, true)
        XCTAssertEqual((q["rqat_activation_quant"] as? [String: Any])?["activation_clip"] as? Double, 0.9, "QuaRot's clip")
        XCTAssertEqual(config["tie_word_embeddings"] as? Bool, false, "the rotation unties the LM head")
        // QAT from it keeps the online rotation, and so does the model it exports.
        try checkTrainingKeepsTheTransforms(from: out, method: "quarot", text: text, near: fp)

        // GPTQ after the rotation, on the rotated inputs' Hessians: as near the FP model.
        let gptq = dir.appendingPathComponent("quarot-gptq")
        let viaGPTQ = try run(["ptq", "--model", model.path, "--scheme", "w8a8kv8", "--method", "quarot", "--then", "gptq",
                               "--calib", text.path, "--seq-len", "32", "--out", gptq.path])
        XCTAssertEqual(viaGPTQ.status, 0, viaGPTQ.output)
        XCTAssertEqual(try perplexity(gptq, on: text), fp, accuracy: 0.05 * fp, "QuaRot + GPTQ W8A8KV8 keeps the function")

        q["rqat_rotation"] = nil
        config["quantization_config"] = q
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let unrotated = try perplexity(out, on: text)
        XCTAssertGreaterThan(abs(unrotated - fp), 0.2 * fp, "without its online rotation the model is another function: \(unrotated) against \(fp)")
    }

    /// `ptq --method flatquant`: calibration lowers every block's output error, the model at
    /// W8A8KV8 keeps the FP perplexity, the checkpoint records the method and holds each block's
    /// transforms, and QAT from it keeps them.
    func testFlatQuantCheckpointKeepsItsTransforms() throws {
        let (dir, model, text) = try transformFixture()
        let out = dir.appendingPathComponent("flatquant")
        let ptq = try run(["ptq", "--model", model.path, "--scheme", "w8a8kv8", "--method", "flatquant", "--calib", text.path,
                           "--seq-len", "32", "--epochs", "3", "--out", out.path])
        XCTAssertEqual(ptq.status, 0, ptq.output)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("ptq-report.json"))) as! [String: Any]
        XCTAssertEqual(report["method"] as? String, "flatquant+rtn")
        let blocks = try XCTUnwrap(report["flatquant_blocks"] as? [[String: Any]])
        XCTAssertEqual(blocks.count, 2)
        // Calibration never raises a block's error (a block whose training does not lower it keeps its start) and lowers some.
        for b in blocks { XCTAssertLessThanOrEqual(b["mse_after"] as! Double, b["mse_before"] as! Double, "\(b)") }
        XCTAssertTrue(blocks.contains { ($0["mse_after"] as! Double) < ($0["mse_before"] as! Double) }, "\(blocks)")
        let fp = try perplexity(model, on: text), transformed = try perplexity(out, on: text)
        XCTAssertEqual(transformed, fp, accuracy: 0.05 * fp, "FlatQuant + W8A8KV8 keeps the function")

        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as! [String: Any]
        let q = config["quantization_config"] as! [String: Any]
        XCTAssertEqual((q["rqat_rotation"] as? [String: Any])?["method"] as? String, "flatquant")
        let tensors = try SafeTensorsFile(url: out.appendingPathComponent("model.safetensors")).tensorNames
        for site in ["qkv", "output", "gate_up", "down"] {
            for part in ["left", "right", "scale", "act_clip"] { XCTAssertTrue(tensors.contains("model.layers.1.flatquant.\(site).\(part)"), "\(site).\(part)") }
        }
        XCTAssertTrue(tensors.contains("model.layers.0.flatquant.kv_clip"))
        for head in ["k", "v"] {
            for part in ["left", "right", "scale"] { XCTAssertTrue(tensors.contains("model.layers.1.flatquant.\(head).\(part)"), "the head transform \(head).\(part)") }
        }
        try checkTrainingKeepsTheTransforms(from: out, method: "flatquant", text: text, near: fp)
    }

    /// Two QAT steps at a tiny learning rate from a transformed init: the run says it keeps the
    /// transforms, and its exported model records them and keeps the init's perplexity.
    func checkTrainingKeepsTheTransforms(from initDir: URL, method: String, text: URL, near fp: Double,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = initDir.deletingLastPathComponent()
        let data = dir.appendingPathComponent("d.jsonl")
        try TinyModels.writeArithmeticData(to: data)
        let runDir = dir.appendingPathComponent("qat-" + method)
        let qat = try run(["sft", "--model", initDir.path, "--data", data.path, "--out", runDir.path, "--qat", "w8a8kv8",
                           "--steps", "2", "--batch-tokens", "128", "--seq-len", "64", "--lr", "1e-6", "--threads", "1"])
        XCTAssertEqual(qat.status, 0, qat.output, file: file, line: line)
        XCTAssertTrue(qat.stderr.contains("\(method) init, its online transforms kept fixed in training"), qat.stderr, file: file, line: line)
        let exported = runDir.appendingPathComponent("quantized")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: exported.appendingPathComponent("config.json"))) as! [String: Any]
        let q = config["quantization_config"] as! [String: Any]
        XCTAssertEqual((q["rqat_rotation"] as? [String: Any])?["method"] as? String, method, file: file, line: line)
        XCTAssertEqual(try perplexity(exported, on: text), fp, accuracy: 0.05 * fp, "the exported model keeps the function", file: file, line: line)
        // A training checkpoint holds no transforms; its init record names the init, so a run
        // resumed from it without --init-model runs them too.
        let checkpoint = runDir.appendingPathComponent("checkpoint-000002")
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: checkpoint.appendingPathComponent("init.json"))) as! [String: String]
        XCTAssertEqual(record, ["init_model": initDir.standardizedFileURL.path, "method": method], file: file, line: line)
        let again = try run(["sft", "--model", checkpoint.path, "--data", data.path, "--out", dir.appendingPathComponent("again-" + method).path,
                             "--qat", "w8a8kv8", "--steps", "1", "--batch-tokens", "128", "--seq-len", "64", "--lr", "1e-6", "--threads", "1"])
        XCTAssertEqual(again.status, 0, again.output, file: file, line: line)
        XCTAssertTrue(again.stderr.contains("trained from the \(method) init") && again.stderr.contains("\(method) init, its online transforms kept fixed"),
                      again.stderr, file: file, line: line)
    }

    /// `rqat train --loss`: an unknown value and a divergence the signal cannot carry are refused
    /// before any work; reverse KL and JSD train (and differ from forward KL); `ce` needs no signal.
    func testTrainLossChoices() throws {
        let dir = try scratch()
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11)
        try TinyModels.writeModel(at: dir.appendingPathComponent("student"), seed: 7)
        let data = dir.appendingPathComponent("d.jsonl")
        try TinyModels.writeArithmeticData(to: data, count: 8)
        func train(_ out: String, _ extra: [String]) throws -> ProcessResult {
            try run(["train", "--teacher", dir.appendingPathComponent("teacher").path,
                     "--student", dir.appendingPathComponent("student").path, "--data", data.path,
                     "--out", dir.appendingPathComponent(out).path, "--steps", "2", "--batch-tokens", "128",
                     "--seq-len", "64", "--threads", "1"] + extra)
        }
        func firstLoss(_ out: String) throws -> Double {
            let text = try String(contentsOf: dir.appendingPathComponent(out).appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            let line = try XCTUnwrap(text.split(separator: "\n").first)
            return try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["loss"] as? Double)
        }

        let unknown = try train("bad", ["--loss", "kd-xl"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("--loss kd-xl is unknown: valid values are kd-fkl (alias kd), kd-rkl, kd-jsd, ce"), unknown.stderr)
        let sampled = try train("bad", ["--loss", "kd-rkl", "--signal", "sampled-8"])
        XCTAssertNotEqual(sampled.status, 0)
        XCTAssertTrue(sampled.stderr.contains("--loss kd-rkl needs the teacher's probabilities"), sampled.stderr)
        let beta = try train("bad", ["--loss", "kd-jsd", "--jsd-beta", "1"])
        XCTAssertNotEqual(beta.status, 0)
        XCTAssertTrue(beta.stderr.contains("--jsd-beta 1.0 is outside (0, 1)"), beta.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("bad").path))

        var losses: [String: Double] = [:]
        for loss in ["kd", "kd-fkl", "kd-rkl", "kd-jsd", "ce"] {
            let r = try train(loss, ["--loss", loss, "--signal", "top-8", "--kd-temperature", "2"])
            XCTAssertEqual(r.status, 0, "\(loss): \(r.stderr)")
            losses[loss] = try firstLoss(loss)
            XCTAssertTrue(losses[loss]!.isFinite && losses[loss]! > 0, "\(loss): \(losses[loss]!)")
        }
        XCTAssertEqual(losses["kd"], losses["kd-fkl"], "kd is forward KL")
        XCTAssertNotEqual(losses["kd-rkl"], losses["kd-fkl"])
        XCTAssertNotEqual(losses["kd-jsd"], losses["kd-fkl"])
        XCTAssertLessThan(losses["kd-jsd"]!, log(2) * 4, "JSD(1/2) is at most log 2 per token, times T^2")
    }

    func testEverySubcommandHasHelp() throws {
        for command in [["info"], ["tokenize"], ["generate"], ["ppl"], ["sft"], ["ptq"], ["bench"], ["bench", "decode"], ["bench", "train"]] {
            let r = try run(command + ["--help"])
            XCTAssertEqual(r.status, 0, "\(command): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("USAGE"), "\(command): \(r.stdout)")
        }
    }

    /// `rqat tokenize` prints the same ids as transformers' GGUF tokenizer.
    func testTokenizePrintsJSONIds() throws {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        struct Cases: Decodable { struct Case: Decodable { let text: String; let ids: [Int] }; let cases: [Case] }
        let fixture = try TestPaths.loadJSON(Cases.self, fixture: "tokenizer-gguf.json")
        let sample = fixture.cases.last!
        let r = try run(["tokenize", "--model", TestPaths.smolLM2GGUF.path, "--text", sample.text])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try JSONDecoder().decode([Int].self, from: Data(r.stdout.utf8))
        XCTAssertEqual(ids, sample.ids)
    }
}
