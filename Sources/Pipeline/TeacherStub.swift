import Foundation
import Jobs

// Replaced by TeacherTraining.swift when `rqat init` and the tokenizer trainer land (issue 11).
struct TeacherTraining {
    let config: PipelineConfig.TeacherSection
    let data: URL
    let dir: URL
    static func modelPath(in dir: URL) throws -> String {
        throw JobError("training a teacher from scratch is not available in this build; set teacher.model to an existing model")
    }
    func run(log: @escaping (String) -> Void) throws { _ = try Self.modelPath(in: dir) }
}
