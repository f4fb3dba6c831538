import CKernels
import Foundation
import Formats
import Model
import Tensors
import TestSupport
import XCTest

/// The bit-exact reference set of the architecture issue: hashes of what the engine computed at
/// dd45000, before the code was reshaped, reproduced exactly by every later commit.
///
/// - last-position logits of SmolLM2 on the 4 prompts of `smollm2-gguf-reference.json`;
/// - GPTQ W3G128 codes (qweight, scales, g_idx) of a few SmolLM2 matrices from `rqat ptq`;
/// - the weights after 3 SFT steps and after 3 KD steps of a tiny model and of SmolLM2, in one
///   process and on 1 teacher + 2 student ranks under mpirun.
///
/// Every value is a CRC-32C of the raw little-endian bytes, per tensor, so a mismatch names the
/// tensors that moved. `scripts/record-reference-set.sh` writes the fixture (RQAT_RECORD_REFERENCE_SET=1);
/// it was run once at dd45000 and must not be re-recorded to make a change pass: a change that
/// moves a last bit names the kernel change and the size of the move in its commit instead.
/// The hashes hold for the build the tests use (debug) on the instruction set recorded with them,
/// and for one OpenBLAS kernel set, since sgemm rounds differently on each. `reference-set.json`
/// was recorded on the Intel Sapphire Rapids machine of the first sessions (last at 794529d). A
/// machine whose OpenBLAS picks other kernels uses `reference-set-<core>-<CPU vendor>.json` when
/// there is one, recorded there by `scripts/record-reference-set.sh` with the code of a commit
/// that reproduced the original set (named in the commit that adds the file). On an AMD EPYC
/// (OpenBLAS "Cooperlake") the logits matched the original set; GPTQ and training did not.
/// The original set holds whole on the kernel sets of `originalSetMachines`; on a machine with
/// neither its own set nor one of those, only the logits (our own kernels) are compared and the
/// rest is skipped with the machine's key, since its sgemm rounds as no recorded set did.
final class ReferenceSetTests: XCTestCase {
    struct ReferenceSet: Codable {
        var instructionSet: Int32
        /// run name -> tensor (or prompt) name -> CRC-32C in hex
        var runs: [String: [String: String]]
    }

    static let fixtureName = "reference-set.json"
    /// This machine's OpenBLAS kernel set and CPU vendor, e.g. "Cooperlake-AuthenticAMD".
    static var machineKey: String {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let vendor = cpuinfo.split(separator: "\n").first { $0.hasPrefix("vendor_id") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown"
        return "\(Threads.blasCoreName)-\(vendor)"
    }

    /// Kernel sets on which the original set was reproduced whole (Intel Xeon, Sapphire Rapids
    /// features, whose Debian OpenBLAS reports "Prescott": at fddb99f, 2026-12-02).
    static let originalSetMachines: Set<String> = ["Prescott-GenuineIntel"]

    /// The set recorded for this machine's key, if any, else the original one.
    static var machineFixtureName: String {
        let own = "reference-set-\(machineKey).json"
        return FileManager.default.fileExists(atPath: TestPaths.fixture(own).path) ? own : fixtureName
    }
    /// Whether a recorded set covers this machine's kernels whole (else only the logits compare).
    static var machineIsCovered: Bool { machineFixtureName != fixtureName || originalSetMachines.contains(machineKey) }
    static var recording: Bool { ProcessInfo.processInfo.environment["RQAT_RECORD_REFERENCE_SET"] == "1" }

    var dir: URL!

    override func setUpWithError() throws {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        dir = try makeScratchDirectory("rqat-refset")
        try TinyModels.writeModel(at: dir.appendingPathComponent("tiny-teacher"), seed: 11)
        try TinyModels.writeModel(at: dir.appendingPathComponent("tiny-student"), seed: 7)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 16)
    }

    static func crc(_ pointer: UnsafeRawPointer, bytes: Int) -> String {
        String(format: "%08x", rqat_crc32c(0, pointer, bytes))
    }

    /// Every tensor of a safetensors file, hashed as stored (fp32 or int32 bytes).
    func hashes(of url: URL, only names: ((String) -> Bool)? = nil) throws -> [String: String] {
        let file = try SafeTensorsFile(url: url)
        var out: [String: String] = [:]
        for name in file.tensorNames where names?(name) ?? true {
            if try file.info(name).dtype == .I32 {
                let values = try file.int32s(name)
                out[name] = values.withUnsafeBytes { Self.crc($0.baseAddress!, bytes: $0.count) }
            } else {
                let t = try file.tensor(name)
                out[name] = Self.crc(t.ptr, bytes: t.count * 4)
            }
        }
        return out
    }

    func rqat(_ arguments: [String], ranks: Int? = nil) throws {
        let result = try MPIRun.run(executable: "rqat", ranks: ranks, arguments: arguments)
        XCTAssertEqual(result.status, 0, result.output)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Arguments shared by every training run: 3 steps of 2 rows x 64 tokens, one thread.
    func trainingArguments(out: String) -> [String] {
        ["--data", path("train.jsonl"), "--out", path(out), "--steps", "3", "--batch-tokens", "128",
         "--seq-len", "64", "--lr", "1e-3", "--warmup", "0", "--threads", "1"]
    }

    func kdArguments(teacher: String, student: String, out: String) -> [String] {
        ["train", "--teacher", teacher, "--student", student, "--loss", "kd", "--signal", "top-16",
         "--kd-temperature", "2", "--bucket-mb", "0.5"] + trainingArguments(out: out)
    }

    func finalCheckpoint(_ out: String) -> URL {
        dir.appendingPathComponent(out).appendingPathComponent("checkpoint-000003/model.safetensors")
    }

    // MARK: - The runs

    func logitRuns() throws -> [String: [String: String]] {
        struct Prompts: Decodable {
            struct Prompt: Decodable { let name: String; let input_ids: [Int] }
            let prompts: [Prompt]
        }
        let prompts = try TestPaths.loadJSON(Prompts.self, fixture: "smollm2-gguf-reference.json").prompts
        let threads = Threads.count
        Threads.set(1)
        defer { Threads.set(threads) }
        let lm = try LanguageModel(path: TestPaths.smolLM2GGUF.path)
        var out: [String: String] = [:]
        for p in prompts {
            let cache = lm.decoder.makeCache(capacities: [p.input_ids.count])
            let logits = lm.decoder.forward([SequenceChunk(sequence: 0, tokens: p.input_ids)], cache: cache)
            out[p.name] = Self.crc(logits.ptr, bytes: logits.count * 4)
        }
        return ["logits-smollm2": out]
    }

    func gptqRun() throws -> [String: [String: String]] {
        let calib = dir.appendingPathComponent("calib.txt")
        let text = (0..<40).map { "Tom has \($0 + 3) apples and buys \(2 * $0 + 1) more, so he has \(3 * $0 + 4) apples in all." }
        try text.joined(separator: "\n").write(to: calib, atomically: true, encoding: .utf8)
        try rqat(["ptq", "--model", TestPaths.smolLM2GGUF.path, "--scheme", "w3g128", "--method", "gptq",
                  "--calib", calib.path, "--calib-samples", "4", "--seq-len", "64", "--act-order",
                  "--out", path("gptq"), "--threads", "1"])
        // The codes, not the zero points: their stored offset is a property of the export format.
        let matrices = ["0.self_attn.q_proj", "0.self_attn.v_proj", "0.mlp.down_proj", "29.self_attn.o_proj", "29.mlp.gate_proj"]
        let wanted = Set(matrices.flatMap { m in ["qweight", "scales", "g_idx"].map { "model.layers.\(m).\($0)" } })
        return ["gptq-w3g128-smollm2": try hashes(of: dir.appendingPathComponent("gptq/model.safetensors")) { wanted.contains($0) }]
    }

    func trainingRuns() throws -> [String: [String: String]] {
        let smol = TestPaths.smolLM2GGUF.path
        var runs: [String: [String: String]] = [:]
        try rqat(["sft", "--model", path("tiny-student")] + trainingArguments(out: "sft-tiny"))
        runs["sft-tiny"] = try hashes(of: finalCheckpoint("sft-tiny"))
        try rqat(["sft", "--model", smol] + trainingArguments(out: "sft-smollm2"))
        runs["sft-smollm2"] = try hashes(of: finalCheckpoint("sft-smollm2"))

        let tiny = kdArguments(teacher: path("tiny-teacher"), student: path("tiny-student"), out: "kd-tiny")
        try rqat(tiny)
        runs["kd-tiny"] = try hashes(of: finalCheckpoint("kd-tiny"))
        try rqat(kdArguments(teacher: path("tiny-teacher"), student: path("tiny-student"), out: "kd-tiny-t1s2") + ["--teachers", "1"], ranks: 3)
        runs["kd-tiny-t1s2"] = try hashes(of: finalCheckpoint("kd-tiny-t1s2"))

        // The student fake-quantizes (W4G64) so that it differs from its teacher, the same file.
        try rqat(kdArguments(teacher: smol, student: smol, out: "kd-smollm2") + ["--qat", "w4g64"])
        runs["kd-smollm2-w4g64"] = try hashes(of: finalCheckpoint("kd-smollm2"))
        try rqat(kdArguments(teacher: smol, student: smol, out: "kd-smollm2-t1s2") + ["--qat", "w4g64", "--teachers", "1"], ranks: 3)
        runs["kd-smollm2-w4g64-t1s2"] = try hashes(of: finalCheckpoint("kd-smollm2-t1s2"))
        return runs
    }

    // MARK: - The check

    func testEngineReproducesTheReferenceSetBitForBit() throws {
        let start = Date()
        func lap(_ what: String) { print(String(format: "reference set: %@ done at %.0f s", what, Date().timeIntervalSince(start))) }
        var runs = try logitRuns()
        lap("logits")
        let whole = Self.recording || Self.machineIsCovered
        if whole {
            try runs.merge(gptqRun()) { $1 }
            lap("gptq")
            try runs.merge(trainingRuns()) { $1 }
            lap("training")
        }
        let isa = rqat_gemv_best_isa()
        // A recording is for this machine's kernel set (the original set is never rewritten).
        let url = TestPaths.fixture("reference-set-\(Self.machineKey).json")
        if Self.recording {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(ReferenceSet(instructionSet: isa, runs: runs)).write(to: url, options: .atomic)
            return
        }
        let reference = try TestPaths.loadJSON(ReferenceSet.self, fixture: Self.machineFixtureName)
        print("reference set: \(Self.machineFixtureName) (this machine: \(Self.machineKey))")
        guard reference.instructionSet == isa else {
            throw XCTSkip("the reference set was recorded on kernel instruction set \(reference.instructionSet), this machine runs \(isa)")
        }
        let compared = reference.runs.filter { whole || runs[$0.key] != nil }
        XCTAssertEqual(Set(runs.keys), Set(compared.keys))
        for (run, expected) in compared.sorted(by: { $0.key < $1.key }) {
            let got = runs[run] ?? [:]
            XCTAssertEqual(Set(got.keys), Set(expected.keys), "\(run): different tensors")
            let moved = expected.keys.sorted().filter { got[$0] != nil && got[$0] != expected[$0] }
            XCTAssertTrue(moved.isEmpty, "\(run): \(moved.count) of \(expected.count) differ from \(Self.machineFixtureName) on \(Self.machineKey), e.g. \(moved.prefix(5))")
        }
        if !whole {
            throw XCTSkip("logits compared; GPTQ and training skipped: no reference set is recorded for this machine's kernel set \(Self.machineKey) (scripts/record-reference-set.sh records one)")
        }
    }
}
