import Cluster
import Formats
import Foundation
import Jobs
import Quant
import Reasoning
import RL
import Tensors
import Train

/// One RL run of the pipeline: `RLJob` (GRPO) from a QAT run's last checkpoint (its latent
/// weights and grid) or from a PTQ init. Under mpirun the teacher ranks serve the rollouts from
/// the policy the lead student sends them, and the students train data-parallel; alone, one
/// process samples and trains. A start the cold-start gate refuses is not an error of the
/// pipeline: the stage records the refusal (`gate.json`) and the run has no model to evaluate.
struct RLRun {
    let policy: String
    let scheme: QuantScheme
    let options: PipelineConfig.RLOptions
    /// The reference's path when the KL term names one.
    let reference: String?
    let task: any ReasoningTask
    let dataSeed: UInt64
    let teachers: Int
    let dir: URL
    /// The PTQ init behind a QAT checkpoint `policy` (its online transforms and activation record).
    var initModel: String?

    /// What the stage leaves besides the RL run's own files.
    struct Gate: Codable, Equatable {
        var stopped: String
    }

    func job(worldSize: Int) -> RLJob {
        var job = options.job(policy: policy, reference: reference, task: task, qat: scheme, runDir: dir, dataSeed: dataSeed,
                              teachers: worldSize > 1 ? teachers : 0)
        job.initModel = initModel
        return job
    }

    /// Runs the job on every rank; the lead student writes `rl-summary.json`, or `gate.json`
    /// when the gate refuses the start.
    func run(world: Communicator, log: @escaping (String) -> Void) throws {
        let job = self.job(worldSize: world.size)
        let roles = try Roles(world: world, teachers: job.teachers)
        let lead = roles.role == .student && roles.group.rank == 0
        do {
            if let summary = try job.run(roles: roles, log: log), lead {
                try JobJSON.write(summary, to: dir.appendingPathComponent("rl-summary.json"))
            }
        } catch let error as ColdStartRefused {
            guard lead else { return }
            try JobJSON.write(Gate(stopped: error.description), to: dir.appendingPathComponent("gate.json"))
            log("stopped by the cold-start gate: \(error.description)")
        }
    }
}
