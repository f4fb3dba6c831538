import Foundation
import Tensors

/// A task name or its data that the user has to fix.
package struct TaskError: UserFacingError {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// The tasks `--task` names, and where their data lives.
package enum TaskRegistry {
    package static let names = ["arith", "gsm8k", "gsm8k-100", "gsm-symbolic"]

    /// `assets` is the folder `scripts/fetch-assets.sh` fills (the GSM-Symbolic templates are
    /// in `gsm-symbolic/eng`); `arith` needs none.
    package static func task(named name: String, assets: URL) throws -> any ReasoningTask {
        let templates = assets.appendingPathComponent("gsm-symbolic/eng")
        switch name {
        case "gsm8k": return try GSM8KTask(directory: templates)
        case "gsm8k-100": return GSM8KAll(originals: try GSM8KTask(directory: templates))
        case "gsm-symbolic": return try GSMSymbolicTask(directory: templates)
        case "arith": return ArithTask.default
        default:
            throw TaskError("unknown task \"\(name)\"; the tasks are \(names.joined(separator: ", "))")
        }
    }
}

/// All 100 GSM8K originals whatever the split asked ("GSM8K-100"): an evaluation set only, since
/// the train templates' originals are among them.
struct GSM8KAll: ReasoningTask {
    let originals: GSM8KTask
    var name: String { "gsm8k-100" }
    func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem] {
        Array(originals.allProblems().prefix(max(count, 0)))
    }
}
