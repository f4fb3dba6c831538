import Cluster
import Eval
import Foundation
import Formats
import Jobs
import Model
import Quant
import Reasoning
import Tensors
import Train

/// One QAT run of the pipeline: KD from the teacher (teacher ranks serve the signal) or SFT on
/// the same traces (cross-entropy; same ranks, steps and tokens), from a PTQ init, saving a
/// checkpoint every `curveEvery` steps for the curves.
struct QATRun {
    let teacher: String
    let student: String
    let scheme: QuantScheme
    let objective: String
    let train: PipelineConfig.TrainSection
    let data: String
    let format: SFTFormat
    let teachers: Int
    let dir: URL
    /// From a FlatQuant init: its transforms train with the weights.
    var trainTransforms = false

    var options: TrainOptions {
        var o = train.options(over: TrainOptions())
        let every = train.curveEvery ?? 0
        o.saveEvery = every
        o.keepLast = every > 0 ? o.steps / every + 2 : 2
        return o
    }

    func run(world: Communicator, log: @escaping (String) -> Void) throws {
        var spec = TrainingSpec(data: data, format: format, dropLong: true, qat: scheme, lsq: false, options: options, runDir: dir)
        spec.trainTransforms = trainTransforms
        let job = DistillJob(teacher: teacher, student: student, loss: objective == "sft" ? .ce : DistillJob.Loss(name: objective) ?? .kd, signal: SignalOptions(),
                             teachers: world.size > 1 ? teachers : 0, lookahead: 2, bucketMB: 8, syncCheckEvery: 10, spec: spec)
        let roles = try Roles(world: world, teachers: job.teachers)
        _ = try job.run(roles: roles, printLine: log)
    }

    /// The saved checkpoints (step > 0) in step order.
    static func checkpoints(in dir: URL) -> [(step: Int, url: URL)] {
        TrainCheckpoint.checkpoints(in: dir).sorted { $0.step < $1.step }
    }

    /// A checkpoint's latent weights through the run's fake quantizer (the grid the checkpoint
    /// saved, the PTQ init's; a min/max grid, which is a function of the weights, when it saved
    /// none), and the scheme's activation and KV-cache quantization: the model QAT had at that step.
    /// A saved training checkpoint as the model QAT trained: its fake-quant grids, and the init's
    /// online transforms (with the checkpoint's values of any that trained) and activation
    /// quantization.
    static func quantizedModel(checkpoint: URL, scheme: QuantScheme, initModel: Checkpoint) throws -> (TrainableDecoder, Checkpoint) {
        let opened = try Checkpoint.open(checkpoint.path)
        let decoder = try TrainableDecoder(config: opened.config, source: opened.weights)
        let grids = try FakeQuantizer.savedGrids(in: opened.weights, names: decoder.linearWeights.map(\.name), scheme: scheme)
        decoder.weightQuantizer = try FakeQuantizer(decoder: decoder, scheme: scheme, mode: .ste, initialGrids: grids)
        let transforms = try OnlineTransforms(initModel)?.updating(from: opened.weights)
        try decoder.installRunTimeTransforms(transforms, activation: .training(scheme, from: initModel.activationQuant))
        return (decoder, opened)
    }
}

/// One point of a QAT curve.
package struct CurvePoint: Codable, Sendable, Equatable {
    package var step: Int
    package var heldoutKL: Double?
    package var accuracy: Double?

    enum CodingKeys: String, CodingKey {
        case step, accuracy
        case heldoutKL = "heldout_kl"
    }
}

/// Accuracy and held-out KL of a QAT run at its saved steps (step 0: the PTQ init).
package struct QATCurve: Codable, Sendable, Equatable {
    package var run: String
    package var from: String
    package var objective: String
    package var points: [CurvePoint]
    /// (step, training loss) from the run's metrics.jsonl.
    package var loss: [[Double]]
}
