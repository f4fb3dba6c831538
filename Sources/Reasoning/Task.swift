import Formats
import Foundation

/// Which part of a task a problem belongs to. Tuning uses `validation` only; `test` is scored once.
package enum Split: String, Codable, Sendable, CaseIterable {
    case train, validation, test
}

/// One problem of a reasoning task, as `rqat data` writes it and `rqat eval` scores it.
package struct Problem: Codable, Sendable, Equatable {
    /// Unique within the task (for gsm-symbolic: template and instance, e.g. "0042-17").
    package var id: String
    /// What the model is asked: the question with the task's instruction.
    package var prompt: String
    /// A worked solution, one step per line, ending `#### N`.
    package var completion: String
    /// The final answer as the checker compares it (normalised: no `,`, `$`, trailing `.0`).
    package var answer: String
    /// gsm-symbolic: the template's file stem and the values bound to its variables.
    package var template: String?
    package var bindings: [String: String]?

    package init(id: String, prompt: String, completion: String, answer: String,
                 template: String? = nil, bindings: [String: String]? = nil) {
        self.id = id
        self.prompt = prompt
        self.completion = completion
        self.answer = answer
        self.template = template
        self.bindings = bindings
    }
}

/// A source of problems: seeded, so the same (split, count, seed) gives the same problems.
package protocol ReasoningTask: Sendable {
    /// The name users pass to `--task`.
    var name: String { get }
    /// `count` problems of `split` (fewer when the split is finite and smaller), drawn with `seed`.
    func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem]
    /// The tokenizer of a model trained from scratch on the task: by default byte-level BPE
    /// learnt from `texts` (what it will train on); a task with a vocabulary of its own returns that.
    func tokenizerForTraining(texts: () throws -> [String]) throws -> BPETrainer.Result
}

extension ReasoningTask {
    package func tokenizerForTraining(texts: () throws -> [String]) throws -> BPETrainer.Result {
        BPETrainer().train(try texts())
    }
}
