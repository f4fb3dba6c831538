import Formats
import Foundation
import Jobs
import Quant
import Reasoning
import RL
import Tensors
import Train

/// One RL run of the pipeline: `RLJob` (GRPO, on rank 0 with every core) from a QAT run's last
/// checkpoint (its latent weights and grid) or from a PTQ init. A start the cold-start gate
/// refuses is not an error of the pipeline: the stage records the refusal (`gate.json`) and
/// the run has no model to evaluate.
struct RLRun {
    let policy: String
    let scheme: QuantScheme
    let options: PipelineConfig.RLOptions
    /// The reference's path when the KL term names one.
    let reference: String?
    let task: any ReasoningTask
    let dataSeed: UInt64
    let dir: URL

    /// What the stage leaves besides the RL run's own files.
    struct Gate: Codable, Equatable {
        var stopped: String
    }

    var job: RLJob {
        options.job(policy: policy, reference: reference, task: task, qat: scheme, runDir: dir, dataSeed: dataSeed)
    }

    /// Runs the job; a refusal by the gate is written to `gate.json` and returned.
    func run(log: @escaping (String) -> Void) throws -> Gate? {
        let job = self.job
        do {
            let summary = try job.run(log: log)
            try JobJSON.write(summary, to: dir.appendingPathComponent("rl-summary.json"))
            return nil
        } catch let error as ColdStartRefused {
            let gate = Gate(stopped: error.description)
            try JobJSON.write(gate, to: dir.appendingPathComponent("gate.json"))
            log("stopped by the cold-start gate: \(error.description)")
            return gate
        }
    }
}
