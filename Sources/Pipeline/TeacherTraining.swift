import Foundation
import Formats
import Jobs
import Model
import Reasoning
import Train

/// A teacher trained from scratch on the task's worked solutions: a byte-level BPE tokenizer
/// learnt from the training text (digits kept single), a random model (`rqat init`), then
/// `rqat sft` in the plain format. Resumes from its last checkpoint when interrupted.
struct TeacherTraining {
    let config: PipelineConfig.TeacherSection
    let task: any ReasoningTask
    let data: URL
    let dir: URL

    static func modelPath(in dir: URL) throws -> String {
        guard let latest = TrainCheckpoint.latestCheckpoint(in: dir.appendingPathComponent("sft")) else {
            throw JobError("\(dir.path) has no trained teacher; delete the directory and re-run the pipeline")
        }
        return latest.path
    }

    func run(log: @escaping (String) -> Void) throws {
        guard let shape = config.initialize, let train = config.train else { return }
        let tokenizerDir = dir.appendingPathComponent("tokenizer"), initDir = dir.appendingPathComponent("init")
        if !FileManager.default.fileExists(atPath: initDir.appendingPathComponent("config.json").path) {
            try task.tokenizerForTraining(texts: { try PipelineRun.readProblems(data).map { $0.prompt + $0.completion } })
                .write(to: tokenizerDir)
            guard let family = ModelConfig.Family(rawValue: shape.arch) else {
                throw ConfigError("teacher.initialize.arch \"\(shape.arch)\" is unknown; use llama or qwen3")
            }
            var initJob = InitJob(family: family, hiddenSize: shape.hidden, layers: shape.layers)
            initJob.heads = shape.heads
            initJob.kvHeads = shape.kvHeads
            initJob.intermediateSize = shape.intermediate
            initJob.headDim = shape.headDim
            initJob.maxPositions = shape.maxPositions ?? 1024
            initJob.seed = shape.seed ?? 0
            let summary = try initJob.run(tokenizerURL: tokenizerDir.appendingPathComponent("tokenizer.json"), out: initDir)
            log("teacher: random \(shape.arch) with \(summary.parameters) parameters written to \(initDir.path)")
        }
        var defaults = TrainOptions()
        (defaults.steps, defaults.lr, defaults.batchTokens, defaults.packing) = (1000, 2e-3, 8192, true)
        var o = train.options(over: defaults)
        o.saveEvery = max(o.steps / 10, 1)
        o.keepLast = 1
        let spec = TrainingSpec(data: data.path, format: .plain, dropLong: true, qat: nil, lsq: false, options: o,
                                runDir: dir.appendingPathComponent("sft"))
        try SFTJob(model: initDir.path, spec: spec).run(log: { log("teacher: " + $0) })
    }
}
