import Foundation
@testable import Pipeline
import TestSupport
import XCTest

final class PipelineConfigTests: XCTestCase {
    static let minimal = """
        {"out": "run", "task": {"name": "arith", "trace_prompts": 10, "heldout": 5, "test": 5},
         "teacher": {"model": "teacher.gguf"},
         "traces": {"temperature": 0, "max_tokens": 32},
         "calibration": [{"name": "traces", "source": "traces", "windows": 4, "length": 64}],
         "ptq": [{"method": "gptq", "scheme": "w3g128"}, {"method": "rtn", "scheme": "w3g128"}],
         "qat": [{"from": "gptq-w3g128", "objective": "kd", "train": {"steps": 3}}],
         "eval": {"max_tokens": 32}}
        """

    func load(_ text: String) throws -> PipelineConfig {
        let config = try StrictJSON.decode(PipelineConfig.self, from: Data(text.utf8), file: "c.json")
        try config.validate(file: "c.json")
        return config
    }

    func message(_ text: String) -> String {
        do { _ = try load(text); return "accepted" } catch { return "\(error)" }
    }

    func testAValidConfigLoads() throws {
        let c = try load(Self.minimal)
        XCTAssertEqual(c.ptq.map { $0.stageName(defaultCalibration: "traces") }, ["gptq-w3g128", "rtn-w3g128"])
        XCTAssertEqual(c.qat[0].stageName, "gptq-w3g128+kd")
        XCTAssertEqual(c.qat[0].train?.steps, 3)
    }

    func testTheCommittedConfigsLoad() throws {
        for name in ["arith", "smollm2-gsm"] {
            let config = try PipelineConfig.load(TestPaths.root.appendingPathComponent("configs/\(name).json"))
            XCTAssertFalse(config.qat.isEmpty, name)
        }
    }

    func testUnknownKeysAreRefusedByName() {
        XCTAssertEqual(message(Self.minimal.replacingOccurrences(of: "\"steps\": 3", with: "\"stpes\": 3")),
                       "c.json: unknown key \"qat[0].train.stpes\"; check its spelling against the documented keys")
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"out\": \"run\"", with: "\"out\": \"run\", \"colour\": 1")).contains("\"colour\""))
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"heldout\": 5", with: "\"heldout\": 5, \"tset\": 3")).contains("\"task.tset\""))
    }

    func testMissingAndMistypedKeysNameTheKey() {
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"heldout\": 5, ", with: "")).contains("missing key \"task.heldout\""))
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"heldout\": 5", with: "\"heldout\": \"five\"")).contains("\"task.heldout\" has the wrong type"))
        XCTAssertTrue(message("{").contains("not valid JSON"))
    }

    func testCrossReferencesAreChecked() {
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"from\": \"gptq-w3g128\"", with: "\"from\": \"gptq-w2g64\""))
            .contains("qat[0].from \"gptq-w2g64\" names no PTQ stage"))
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"objective\": \"kd\"", with: "\"objective\": \"rl\"")).contains("use kd (= kd-fkl), kd-rkl, kd-jsd or sft"))
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "\"method\": \"rtn\"", with: "\"method\": \"awq\"")).contains("use rtn, gptq, quarot (rotation, then RTN) or flatquant"))
        // QuaRot and FlatQuant inits are PTQ stages QAT and RL start from; FlatQuant needs calibration.
        for method in ["quarot", "flatquant"] {
            let transformed = Self.minimal.replacingOccurrences(of: "{\"method\": \"rtn\", \"scheme\": \"w3g128\"}",
                                                                with: "{\"method\": \"\(method)\", \"scheme\": \"w4a4kv4\"}")
            XCTAssertEqual(message(transformed), "accepted", method)
            XCTAssertEqual(message(transformed.replacingOccurrences(of: "\"from\": \"gptq-w3g128\"", with: "\"from\": \"\(method)-w4a4kv4\"")), "accepted", method)
        }
        XCTAssertTrue(message(Self.minimal.replacingOccurrences(of: "{\"model\": \"teacher.gguf\"}", with: "{}")).contains("exactly one of"))
    }

    func testTrainDefaultsFillOnlyUnsetFields() {
        let run = PipelineConfig.TrainSection(steps: 5, lr: nil)
        let merged = run.over(PipelineConfig.TrainSection(steps: 100, lr: 1e-3, batchTokens: 512))
        XCTAssertEqual(merged.steps, 5)
        XCTAssertEqual(merged.lr, 1e-3)
        XCTAssertEqual(merged.batchTokens, 512)
    }
}

/// A world of one rank, without MPI.
final class SoloWorld: StageWorld {
    var rank: Int { 0 }
    var size: Int { 1 }
    func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
    func barrier() throws {}
    func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws {}
    func poll(from source: Int?, tag: Int?) throws -> (bytes: [UInt8], source: Int, tag: Int)? { nil }
}

final class StageRunnerTests: XCTestCase {
    func testStagesSkipWhenUnchangedRedoWhenChangedAndResumeWhenInterrupted() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-stages-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let world = SoloWorld()
        var bodies: [String] = []
        func pass(_ setting: Int, failSecond: Bool = false) throws -> [String] {
            bodies = []
            let runner = StageRunner(root: root, world: world, log: { _ in })
            let first = try runner.run("first", inputs: ["setting": setting]) { dir in
                bodies.append("first")
                try Data("\(setting)".utf8).write(to: dir.appendingPathComponent("out.txt"))
            }
            try runner.run("second", inputs: ["first": first]) { dir in
                bodies.append("second")
                if failSecond { throw ConfigError("interrupted") }
            }
            try runner.run("independent", inputs: ["x": 1]) { _ in bodies.append("independent") }
            return bodies
        }
        XCTAssertEqual(try pass(1), ["first", "second", "independent"])
        XCTAssertEqual(try pass(1), [], "nothing changed")
        XCTAssertEqual(try pass(2), ["first", "second"], "a change reruns the stage and what depends on it")
        XCTAssertEqual(try String(contentsOf: root.appendingPathComponent("first/out.txt"), encoding: .utf8), "2")
        XCTAssertThrowsError(try pass(3, failSecond: true))
        let manifest = try JSONDecoder().decode(StageManifest.self, from: Data(contentsOf: StageManifest.url(root.appendingPathComponent("second"))))
        XCTAssertFalse(manifest.completed)
        XCTAssertEqual(try pass(3), ["second"], "the interrupted stage runs again; the completed ones are kept")
    }
}
