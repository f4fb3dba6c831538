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
/// process samples and trains. A start the cold-start gate refuses, or a run its on-policy check
/// or collapse guard stops, is not an error of the pipeline: the stage records the stop
/// (`stopped.json`), the run has no model to evaluate, and the pipeline goes on.
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

    /// What the stage leaves besides the RL run's own files when the run stopped.
    struct Stop: Codable, Equatable {
        /// The stop's message (what `rqat rl` prints).
        var stopped: String
        var by: RLRunStopped.Guard
        /// The step the run stopped after (none for the gate, which stops before any step).
        var step: Int?
        /// The probe set's mean reward before RL (the gate's figure).
        var startReward: Double?

        enum CodingKeys: String, CodingKey {
            case stopped, by, step
            case startReward = "start_reward"
        }

        static let file = "stopped.json"
        /// The record in a stage directory, if the run stopped (`gate.json`: a gate refusal as
        /// pipelines before the other stops recorded it).
        static func read(in dir: URL) -> Stop? {
            if let stop = try? JobJSON.read(Stop.self, from: dir.appendingPathComponent(file), missing: "") { return stop }
            struct Gate: Codable { var stopped: String }
            return (try? JobJSON.read(Gate.self, from: dir.appendingPathComponent("gate.json"), missing: ""))
                .map { Stop(stopped: $0.stopped, by: .coldStartGate) }
        }
    }

    func job(worldSize: Int) -> RLJob {
        var job = options.job(policy: policy, reference: reference, task: task, qat: scheme, runDir: dir, dataSeed: dataSeed,
                              teachers: worldSize > 1 ? teachers : 0)
        job.initModel = initModel
        return job
    }

    /// Runs the job on every rank; the lead student writes `rl-summary.json`, or `stopped.json`
    /// when the run stopped.
    func run(world: Communicator, log: @escaping (String) -> Void) throws {
        let job = self.job(worldSize: world.size)
        let roles = try Roles(world: world, teachers: job.teachers)
        let lead = roles.role == .student && roles.group.rank == 0
        do {
            if let summary = try job.run(roles: roles, log: log), lead {
                try JobJSON.write(summary, to: dir.appendingPathComponent("rl-summary.json"))
            }
        } catch let error as ColdStartRefused {
            try record(Stop(stopped: error.description, by: .coldStartGate, startReward: error.startReward), lead: lead, log: log)
        } catch let error as RLRunStopped {
            try record(Stop(stopped: error.description, by: error.by, step: error.step, startReward: error.startReward),
                       lead: lead, log: log)
        }
    }

    private func record(_ stop: Stop, lead: Bool, log: (String) -> Void) throws {
        guard lead else { return }
        try JobJSON.write(stop, to: dir.appendingPathComponent(Stop.file))
        log("stopped by the \(stop.by.rawValue)\(stop.step.map { " at step \($0)" } ?? ""): \(stop.stopped)")
    }
}
