import Foundation
import Formats
import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One logged optimizer step.
package struct LossRecord: Codable, Equatable, Sendable {
    package var step: Int
    package var loss: Double
    package var lr: Double
    package var gradNorm: Double?

    package init(step: Int, loss: Double, lr: Double, gradNorm: Double? = nil) {
        self.step = step
        self.loss = loss
        self.lr = lr
        self.gradNorm = gradNorm
    }
}

/// Everything besides tensors that a resumed run needs, saved as `trainer_state.json`.
package struct TrainerState: Codable, Equatable, Sendable {
    /// Optimizer steps completed.
    package var step: Int
    package var schedule: LRSchedule
    /// Where the data stream resumes, and the seed its shuffling is drawn from.
    package var dataPosition: DataPosition
    package var dataSeed: UInt64
    /// The run's own random stream (sampling, noise), saved mid-sequence.
    package var rng: SeededRNG
    package var beta1: Double
    package var beta2: Double
    package var eps: Double
    package var weightDecay: Double
    package var decayRule: WeightDecayRule
    package var maxGradNorm: Double?
    /// The most recent steps' losses (see `appendLoss`).
    package var lossHistory: [LossRecord]
    /// Free-form settings the caller wants back (command-line options, dataset path...).
    package var settings: [String: String]

    package init(step: Int, schedule: LRSchedule, dataPosition: DataPosition, dataSeed: UInt64, rng: SeededRNG,
                optimizer: AdamW, maxGradNorm: Double?, lossHistory: [LossRecord] = [], settings: [String: String] = [:]) {
        self.step = step
        self.schedule = schedule
        self.dataPosition = dataPosition
        self.dataSeed = dataSeed
        self.rng = rng
        beta1 = optimizer.beta1
        beta2 = optimizer.beta2
        eps = optimizer.eps
        weightDecay = optimizer.weightDecay
        decayRule = optimizer.decayRule
        self.maxGradNorm = maxGradNorm
        self.lossHistory = lossHistory
        self.settings = settings
    }

    /// Appends a record, keeping only the last `keep`.
    package mutating func appendLoss(_ record: LossRecord, keep: Int = 1000) {
        lossHistory.append(record)
        if lossHistory.count > keep { lossHistory.removeFirst(lossHistory.count - keep) }
    }
}

/// A training checkpoint: a DIRECTORY that transformers can load as a model and we can resume from.
///
///     checkpoint-000020/
///       model.safetensors        every parameter under its Hugging Face name, F32
///       config.json              the ModelConfig
///       optimizer.safetensors    `<name>.exp_avg`, `<name>.exp_avg_sq`; metadata "step"
///       trainer_state.json       TrainerState
///       (files passed as `extraFiles`, e.g. tokenizer.json)
///
/// Saving writes everything into a hidden sibling `.checkpoint-000020.tmp-<uuid>`, fsyncs the
/// files and the directory, and only then renames it to its final name, so a crash never leaves
/// a partial checkpoint under that name. Replacing an existing checkpoint moves the old one aside
/// (`.checkpoint-000020.old-<uuid>`), renames the new one in, and deletes the old; a crash between
/// the two renames leaves no final directory, and `cleanStale` renames the old one back.
/// Readers ignore every name starting with a dot.
package enum TrainCheckpoint {
    package static let prefix = "checkpoint-"

    package static func name(step: Int) -> String { prefix + String(format: "%06d", step) }

    /// Saves to `directory` (created or replaced). `parameters` includes frozen ones: the saved
    /// model is the whole model.
    package static func save(to directory: URL, parameters: [Parameter], config: ModelConfig,
                            optimizer: AdamW, state: TrainerState, extraFiles: [URL] = []) throws {
        try DurableFiles.writeDirectory(directory) { temp in
            // transformers refuses safetensors whose metadata lacks format "pt".
            try SafeTensorsWriter.write(parameters.map { ($0.name, $0.value, .F32) }, metadata: ["format": "pt"],
                                        to: temp.appendingPathComponent("model.safetensors"))
            var moments: [(name: String, tensor: Tensor, dtype: SafeTensorsDType)] = []
            for p in parameters {
                guard let pair = optimizer.moments[p.name] else { continue }
                moments.append((p.name + ".exp_avg", pair.m, .F32))
                moments.append((p.name + ".exp_avg_sq", pair.v, .F32))
            }
            try SafeTensorsWriter.write(moments, metadata: ["format": "pt", "step": String(optimizer.stepCount)],
                                        to: temp.appendingPathComponent("optimizer.safetensors"))

            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try DurableFiles.write(try encoder.encode(config), to: temp.appendingPathComponent("config.json"))
            try DurableFiles.write(try encoder.encode(state), to: temp.appendingPathComponent("trainer_state.json"))
            for file in extraFiles {
                guard let data = try? Data(contentsOf: file) else { throw FormatError(file.path, "cannot read (to copy into the checkpoint)") }
                try DurableFiles.write(data, to: temp.appendingPathComponent(file.lastPathComponent))
            }
        }
    }

    /// Loads a checkpoint: copies the weights into `parameters` (every one must be present with
    /// the same shape), restores `optimizer` if given (step count, moments, betas, eps, weight
    /// decay; build it with `state.decayRule`, which a constructed optimizer cannot change), and
    /// returns the config and trainer state.
    package static func load(from directory: URL, into parameters: [Parameter],
                            optimizer: AdamW?) throws -> (config: ModelConfig, state: TrainerState) {
        let path = directory.path
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("trainer_state.json").path) else {
            throw FormatError(path, "not a training checkpoint (no trainer_state.json)")
        }
        let config = try ModelConfig.load(directory.appendingPathComponent("config.json"))
        let stateURL = directory.appendingPathComponent("trainer_state.json")
        let state: TrainerState
        do {
            state = try JSONDecoder().decode(TrainerState.self, from: try Data(contentsOf: stateURL))
        } catch {
            throw FormatError(stateURL.path, "invalid trainer state: \(error)")
        }

        let model = try SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors"))
        for p in parameters {
            guard model.has(p.name) else { throw FormatError(model.path, "no tensor named \(p.name); the checkpoint belongs to another model") }
            let t = try model.tensor(p.name)
            guard t.shape == p.value.shape else {
                throw FormatError(model.path, "tensor \(p.name) has shape \(t.shape), the model expects \(p.value.shape)")
            }
            p.value.ptr.update(from: t.ptr, count: t.count)
        }

        if let optimizer {
            let file = try SafeTensorsFile(url: directory.appendingPathComponent("optimizer.safetensors"))
            guard let stepText = file.metadata["step"], let step = Int(stepText) else {
                throw FormatError(file.path, "metadata has no integer \"step\"")
            }
            var moments: [String: (m: Tensor, v: Tensor)] = [:]
            for p in parameters where file.has(p.name + ".exp_avg") {
                moments[p.name] = (try file.tensor(p.name + ".exp_avg"), try file.tensor(p.name + ".exp_avg_sq"))
            }
            try optimizer.restore(stepCount: step, moments: moments, source: file.path)
            optimizer.beta1 = state.beta1
            optimizer.beta2 = state.beta2
            optimizer.eps = state.eps
            optimizer.weightDecay = state.weightDecay
        }
        return (config, state)
    }

    /// The step number of a checkpoint directory name, nil for anything else.
    package static func step(ofName name: String) -> Int? {
        guard name.hasPrefix(prefix) else { return nil }
        let digits = name.dropFirst(prefix.count)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    /// Complete checkpoints in `runDir` (those with a trainer_state.json), oldest first.
    package static func checkpoints(in runDir: URL) -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runDir.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard let step = step(ofName: name) else { return nil }
            let url = runDir.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent("trainer_state.json").path) else { return nil }
            return (step, url)
        }.sorted { $0.0 < $1.0 }
    }

    /// The checkpoint to resume from: the highest step in `runDir`, or nil.
    package static func latestCheckpoint(in runDir: URL) -> URL? {
        checkpoints(in: runDir).last?.url
    }

    /// Deletes all but the newest `keepLast` checkpoints; returns the deleted directories.
    @discardableResult
    package static func prune(_ runDir: URL, keepLast: Int) throws -> [URL] {
        let all = checkpoints(in: runDir)
        let doomed = all.dropLast(max(0, keepLast)).map(\.url)
        for url in doomed { try FileManager.default.removeItem(at: url) }
        return Array(doomed)
    }

    /// Tidies what an interrupted `save` left in `runDir`: temporary directories are deleted, and
    /// a checkpoint moved aside whose replacement never arrived is renamed back.
    /// Returns the names removed or restored. Call it before `latestCheckpoint` when resuming.
    @discardableResult
    package static func cleanStale(_ runDir: URL) throws -> [String] {
        let fm = FileManager.default
        var touched: [String] = []
        for name in (try? fm.contentsOfDirectory(atPath: runDir.path)) ?? [] where name.hasPrefix("." + prefix) {
            let url = runDir.appendingPathComponent(name)
            if let range = name.range(of: ".old-") {
                let finalName = String(name[name.index(after: name.startIndex)..<range.lowerBound])
                let final = runDir.appendingPathComponent(finalName)
                if !fm.fileExists(atPath: final.path) {
                    try DurableFiles.rename(url, final)
                    touched.append(name)
                    continue
                }
            } else if name.range(of: ".tmp-") == nil {
                continue
            }
            try fm.removeItem(at: url)
            touched.append(name)
        }
        return touched
    }
}
