import Foundation
import Reasoning

/// `rqat data`: a task's problems as JSONL records {"id", "prompt", "completion", "answer", ...}
/// (gsm-symbolic adds "template" and "bindings"), the format `rqat sft` trains on.
package struct DataJob {
    package var task: String
    package var split: Split
    package var count: Int
    package var seed: UInt64
    package var out: URL
    package var assets: URL

    package init(task: String, split: Split, count: Int, seed: UInt64, out: URL, assets: URL) {
        self.task = task
        self.split = split
        self.count = count
        self.seed = seed
        self.out = out
        self.assets = assets
    }

    /// The problems written (fewer than `count` when the split is finite and smaller).
    @discardableResult
    package func run() throws -> [Problem] {
        let problems = try TaskRegistry.task(named: task, assets: assets).problems(split: split, count: count, seed: seed)
        try JobJSON.writeLines(problems, to: out)
        return problems
    }
}
