import Foundation
import XCTest
import Formats
import Tensors
import TestSupport
@testable import Train

final class CheckpointTests: XCTestCase {
    private var runDir: URL!

    override func setUpWithError() throws {
        runDir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: runDir)
    }

    private let config = ModelConfig(modelType: .llama, hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 1,
                                     numAttentionHeads: 2, numKeyValueHeads: 1, vocabSize: 16,
                                     bosTokenId: 1, eosTokenId: 2)

    /// A model-shaped parameter list with zero values (names as the decoder uses them).
    private func blankParameters() -> [Parameter] {
        let shapes: [(String, [Int])] = [
            ("model.embed_tokens.weight", [16, 8]),
            ("model.layers.0.input_layernorm.weight", [8]),
            ("model.layers.0.self_attn.q_proj.weight", [8, 8]),
            ("model.layers.0.self_attn.k_proj.weight", [4, 8]),
            ("model.layers.0.self_attn.v_proj.weight", [4, 8]),
            ("model.layers.0.self_attn.o_proj.weight", [8, 8]),
            ("model.layers.0.post_attention_layernorm.weight", [8]),
            ("model.layers.0.mlp.gate_proj.weight", [12, 8]),
            ("model.layers.0.mlp.up_proj.weight", [12, 8]),
            ("model.layers.0.mlp.down_proj.weight", [8, 12]),
            ("model.norm.weight", [8]),
            ("lm_head.weight", [16, 8]),
        ]
        return shapes.map { Parameter(name: $0.0, value: Tensor(shape: $0.1)) }
    }

    /// Random parameters and an optimizer that has taken `steps` steps on random gradients.
    private func trainedModel(steps: Int, seed: UInt64) -> ([Parameter], AdamW) {
        var rng = SeededRNG(seed: seed)
        let params = blankParameters()
        for p in params { rng.fillNormal(p.value, std: 0.1) }
        let opt = AdamW(parameters: params, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        for _ in 0..<steps {
            for p in params { rng.fillNormal(p.grad) }
            opt.step(lr: 1e-3)
            opt.zeroGrad()
        }
        return (params, opt)
    }

    private func state(step: Int, optimizer: AdamW) -> TrainerState {
        var rng = SeededRNG(seed: 0xDEAD_BEEF_CAFE_F00D)
        for _ in 0..<37 { _ = rng.next() }  // a mid-stream state with full 64-bit words
        var s = TrainerState(step: step, schedule: .cosine(peak: 3e-4, warmupSteps: 10, totalSteps: 500, minLRRatio: 0.1),
                             dataPosition: DataPosition(epoch: 2, index: 17), dataSeed: UInt64.max - 3, rng: rng,
                             optimizer: optimizer, maxGradNorm: 1.0, settings: ["data": "train.jsonl"])
        for k in 0..<5 { s.appendLoss(LossRecord(step: k, loss: 2.0 / Double(k + 1), lr: 1e-4, gradNorm: 0.3), keep: 3) }
        return s
    }

    private func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

    private func dotEntries() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: runDir.path).filter { $0.hasPrefix(".") }
    }

    // MARK: Round trip

    func testSaveLoadIsBitIdenticalAndResumesTheSameSteps() throws {
        let (params, opt) = trainedModel(steps: 3, seed: 11)
        let saved = state(step: 3, optimizer: opt)
        XCTAssertEqual(saved.lossHistory.map(\.step), [2, 3, 4])
        let dir = runDir.appendingPathComponent(TrainCheckpoint.name(step: 3))
        XCTAssertEqual(dir.lastPathComponent, "checkpoint-000003")
        let tokenizerFile = runDir.appendingPathComponent("tokenizer.json")
        try Data("{}".utf8).write(to: tokenizerFile)
        try TrainCheckpoint.save(to: dir, parameters: params, config: config, optimizer: opt, state: saved,
                                 extraFiles: [tokenizerFile])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(),
                       ["config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json", "trainer_state.json"])
        XCTAssertEqual(try dotEntries(), [])

        // The files are what other tools expect.
        let model = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(model.tensorNames, params.map(\.name))
        XCTAssertEqual(model.metadata["format"], "pt")
        XCTAssertEqual(try model.info("lm_head.weight").dtype, .F32)
        let moments = try SafeTensorsFile(url: dir.appendingPathComponent("optimizer.safetensors"))
        XCTAssertEqual(moments.metadata["step"], "3")
        XCTAssertTrue(moments.has("model.norm.weight.exp_avg"))
        XCTAssertEqual(bits(try moments.tensor("model.layers.0.mlp.up_proj.weight.exp_avg_sq")),
                       bits(opt.moments["model.layers.0.mlp.up_proj.weight"]!.v))
        XCTAssertEqual(try ModelConfig.load(dir.appendingPathComponent("config.json")), config)
        XCTAssertEqual(try Checkpoint.open(dir.path).config, config)

        // Load into a fresh model and optimizer.
        let fresh = blankParameters()
        let freshOpt = AdamW(parameters: fresh, beta1: 0.5, beta2: 0.5, eps: 1, weightDecay: 0)
        let (loadedConfig, loadedState) = try TrainCheckpoint.load(from: dir, into: fresh, optimizer: freshOpt)
        XCTAssertEqual(loadedConfig, config)
        XCTAssertEqual(loadedState, saved)
        XCTAssertEqual(loadedState.rng, saved.rng)
        XCTAssertEqual(loadedState.dataSeed, UInt64.max - 3)
        XCTAssertEqual(freshOpt.stepCount, 3)
        XCTAssertEqual([freshOpt.beta1, freshOpt.beta2, freshOpt.eps, freshOpt.weightDecay], [0.9, 0.95, 1e-8, 0.1])
        for (a, b) in zip(params, fresh) {
            XCTAssertEqual(bits(a.value), bits(b.value), a.name)
            XCTAssertEqual(bits(opt.moments[a.name]!.m), bits(freshOpt.moments[a.name]!.m), a.name)
            XCTAssertEqual(bits(opt.moments[a.name]!.v), bits(freshOpt.moments[a.name]!.v), a.name)
        }
        // The restored RNG continues the same stream.
        var r1 = saved.rng, r2 = loadedState.rng
        XCTAssertEqual((0..<4).map { _ in r1.next() }, (0..<4).map { _ in r2.next() })

        // One more step from both gives identical parameters (bias correction uses step 4).
        var g = SeededRNG(seed: 99)
        for (a, b) in zip(params, fresh) {
            g.fillNormal(a.grad)
            b.grad.ptr.update(from: a.grad.ptr, count: a.grad.count)
        }
        opt.step(lr: 1e-3)
        freshOpt.step(lr: 1e-3)
        for (a, b) in zip(params, fresh) { XCTAssertEqual(bits(a.value), bits(b.value), a.name) }
    }

    func testLoadRejectsAnotherModel() throws {
        let (params, opt) = trainedModel(steps: 1, seed: 3)
        let dir = runDir.appendingPathComponent("checkpoint-000001")
        try TrainCheckpoint.save(to: dir, parameters: params, config: config, optimizer: opt, state: state(step: 1, optimizer: opt))
        let other = [Parameter(name: "model.embed_tokens.weight", value: Tensor(shape: [16, 4]))]
        XCTAssertThrowsError(try TrainCheckpoint.load(from: dir, into: other, optimizer: nil)) { error in
            XCTAssertTrue("\(error)".contains("model.embed_tokens.weight"), "\(error)")
            XCTAssertTrue("\(error)".contains("[16, 8]"), "\(error)")
        }
        let missing = [Parameter(name: "model.layers.5.mlp.up_proj.weight", value: Tensor(shape: [12, 8]))]
        XCTAssertThrowsError(try TrainCheckpoint.load(from: dir, into: missing, optimizer: nil))
        XCTAssertThrowsError(try TrainCheckpoint.load(from: runDir, into: params, optimizer: nil)) { error in
            XCTAssertTrue("\(error)".contains("trainer_state.json"), "\(error)")
        }
    }

    // MARK: Atomicity

    func testReplaceKeepsOnlyTheNewCheckpoint() throws {
        let dir = runDir.appendingPathComponent("checkpoint-000005")
        let (p1, o1) = trainedModel(steps: 1, seed: 1)
        try TrainCheckpoint.save(to: dir, parameters: p1, config: config, optimizer: o1, state: state(step: 5, optimizer: o1))
        let (p2, o2) = trainedModel(steps: 2, seed: 2)
        try TrainCheckpoint.save(to: dir, parameters: p2, config: config, optimizer: o2, state: state(step: 5, optimizer: o2))
        XCTAssertEqual(try dotEntries(), [])
        let fresh = blankParameters()
        let freshOpt = AdamW(parameters: fresh)
        _ = try TrainCheckpoint.load(from: dir, into: fresh, optimizer: freshOpt)
        XCTAssertEqual(freshOpt.stepCount, 2)
        XCTAssertEqual(bits(fresh[2].value), bits(p2[2].value))
        XCTAssertNotEqual(bits(fresh[2].value), bits(p1[2].value))
    }

    /// A save that fails part-way leaves neither a final directory nor its temporary one.
    func testFailedSaveLeavesNothing() throws {
        let (params, opt) = trainedModel(steps: 1, seed: 4)
        let dir = runDir.appendingPathComponent("checkpoint-000007")
        XCTAssertThrowsError(try TrainCheckpoint.save(to: dir, parameters: params, config: config, optimizer: opt,
                                                      state: state(step: 7, optimizer: opt),
                                                      extraFiles: [runDir.appendingPathComponent("absent.json")]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path))
        XCTAssertEqual(try dotEntries(), [])
        XCTAssertNil(TrainCheckpoint.latestCheckpoint(in: runDir))
    }

    /// What a crash leaves behind is never taken for a checkpoint, and `cleanStale` tidies it.
    func testLatestIgnoresAndCleanStaleRemovesHalfWrittenDirectories() throws {
        let fm = FileManager.default
        let (params, opt) = trainedModel(steps: 1, seed: 5)
        for step in [10, 20] {
            try TrainCheckpoint.save(to: runDir.appendingPathComponent(TrainCheckpoint.name(step: step)), parameters: params,
                                     config: config, optimizer: opt, state: state(step: step, optimizer: opt))
        }
        // A crash while writing step 30: its temporary directory with a truncated weights file.
        let temp = runDir.appendingPathComponent(".checkpoint-000030.tmp-1234")
        try fm.createDirectory(at: temp, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: temp.appendingPathComponent("model.safetensors"))
        // A directory copied by hand without trainer state, and unrelated names.
        try fm.createDirectory(at: runDir.appendingPathComponent("checkpoint-000040"), withIntermediateDirectories: false)
        try fm.createDirectory(at: runDir.appendingPathComponent("checkpoint-final"), withIntermediateDirectories: false)
        // A crash between the two renames of replacing step 20... simulated for a step 15 whose
        // final directory is gone and whose old copy was moved aside.
        let aside = runDir.appendingPathComponent(".checkpoint-000015.old-5678")
        try fm.copyItem(at: runDir.appendingPathComponent("checkpoint-000010"), to: aside)

        XCTAssertEqual(TrainCheckpoint.latestCheckpoint(in: runDir)?.lastPathComponent, "checkpoint-000020")
        XCTAssertEqual(TrainCheckpoint.checkpoints(in: runDir).map(\.step), [10, 20])

        let touched = try TrainCheckpoint.cleanStale(runDir).sorted()
        XCTAssertEqual(touched, [".checkpoint-000015.old-5678", ".checkpoint-000030.tmp-1234"])
        XCTAssertEqual(try dotEntries(), [])
        XCTAssertEqual(TrainCheckpoint.checkpoints(in: runDir).map(\.step), [10, 15, 20])
        // The same step saved again after a crash works normally.
        try TrainCheckpoint.save(to: runDir.appendingPathComponent(TrainCheckpoint.name(step: 30)), parameters: params,
                                 config: config, optimizer: opt, state: state(step: 30, optimizer: opt))
        XCTAssertEqual(TrainCheckpoint.latestCheckpoint(in: runDir)?.lastPathComponent, "checkpoint-000030")
    }

    func testPruneKeepsTheLastK() throws {
        let (params, opt) = trainedModel(steps: 1, seed: 6)
        for step in [5, 100, 20, 40] {
            try TrainCheckpoint.save(to: runDir.appendingPathComponent(TrainCheckpoint.name(step: step)), parameters: params,
                                     config: config, optimizer: opt, state: state(step: step, optimizer: opt))
        }
        let removed = try TrainCheckpoint.prune(runDir, keepLast: 2)
        XCTAssertEqual(removed.map(\.lastPathComponent), ["checkpoint-000005", "checkpoint-000020"])
        XCTAssertEqual(TrainCheckpoint.checkpoints(in: runDir).map(\.step), [40, 100])
        XCTAssertEqual(TrainCheckpoint.step(ofName: "checkpoint-1234567"), 1_234_567)
        XCTAssertNil(TrainCheckpoint.step(ofName: "checkpoint-"))
        XCTAssertNil(TrainCheckpoint.step(ofName: ".checkpoint-000001.tmp-x"))
    }
}
