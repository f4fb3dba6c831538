import Cluster
import Foundation
import Formats
import Model

/// Batched generation over a prompt file (`rqat generate --prompts FILE --out FILE`): every
/// result a JSON line {"prompt", "completion", "text", "finish", "prompt_tokens",
/// "completion_tokens"}, each round's lines appended as soon as it ends.
///
/// Under mpirun (more than one rank), rank 0 reads the prompts and writes the file while ranks
/// 1... serve as teachers: each round of `batch` prompts per teacher is split into one batch per
/// teacher. Seeds are per prompt, so the output is the same as a single process's.
package struct GenerationJob {
    package var chat: Bool
    package var maxTokens: Int
    package var temperature: Float
    package var topP: Float
    package var topK: Int
    package var seed: UInt64
    /// Prompts generated together (per teacher rank under mpirun).
    package var batch: Int

    package init(chat: Bool, maxTokens: Int, temperature: Float, topP: Float, topK: Int, seed: UInt64, batch: Int) {
        self.chat = chat
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.batch = batch
    }

    /// A prompts file: one prompt per line, or JSONL with a "prompt" field.
    package static func readPrompts(_ path: String) throws -> [String] {
        try TextRecords.read(path, field: "prompt", what: "prompts file")
    }

    package func run(_ lm: LanguageModel, promptsPath: String, outPath: String, log: (String) -> Void) throws {
        let world = try MPI.initialize()
        defer { MPI.finalize() }
        let teacherRanks = Array(1..<max(world.size, 1))
        if world.rank > 0 {
            let service = TeacherService(decoder: lm.decoder, options: SignalOptions(), stopTokens: lm.stopTokens)
            try service.serve(world: world, students: 1)
            return
        }
        let generator = Generator(decoder: lm.decoder, stopTokens: lm.stopTokens)
        let generate: ([GenerationRequest]) throws -> [GenerationResult] = teacherRanks.isEmpty
            ? { generator.generate($0) }
            : { try generateOnTeachers($0, world: world, teacherRanks: teacherRanks, vocab: lm.config.vocabSize, codec: .shuffledZstd(level: 3)) }
        do {
            try writeCompletions(lm, promptsPath: promptsPath, outPath: outPath, round: batch * max(teacherRanks.count, 1),
                                 generate: generate, log: log)
        } catch {
            // The teacher ranks would otherwise wait for rank 0 forever.
            if world.size > 1 { MPI.abort("error: \(error)") }
            throw error
        }
        try releaseTeachers(world: world, teacherRanks: teacherRanks)
    }

    private func writeCompletions(_ lm: LanguageModel, promptsPath: String, outPath: String, round: Int,
                                  generate: ([GenerationRequest]) throws -> [GenerationResult], log: (String) -> Void) throws {
        let texts = try Self.readPrompts(promptsPath)
        guard !texts.isEmpty else { throw FormatError(promptsPath, "no prompts") }
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: outPath) else { throw FormatError(outPath, "cannot write") }
        defer { try? handle.close() }
        let start = Date()
        var generated = 0
        for first in stride(from: 0, to: texts.count, by: round) {
            let slice = Array(texts[first..<min(first + round, texts.count)])
            let requests = slice.enumerated().map { (i, text) -> GenerationRequest in
                let ids = lm.encodePrompt(text, chat: chat)
                // Seeds differ per prompt but do not depend on the batch size.
                return GenerationRequest(prompt: ids, maxNewTokens: maxTokens,
                                         sampling: SamplingParams(temperature: temperature, topP: topP, topK: topK,
                                                                  seed: seed &+ UInt64(first + i)))
            }
            let results = try generate(requests)
            for (i, r) in results.enumerated() {
                let completionIds = r.tokens.filter { !lm.stopTokens.contains($0) }
                let promptText = lm.chatTemplate.prompt(slice[i], chat: chat)
                let completion = lm.tokenizer.decode(completionIds)
                let fullText = promptText + lm.tokenizer.decode(r.tokens)
                let record: [String: Any] = ["prompt": slice[i], "completion": completion, "text": fullText,
                                             "finish": r.finish.rawValue, "prompt_tokens": requests[i].prompt.count,
                                             "completion_tokens": r.tokens.count]
                var line = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
                line.append(0x0A)
                try handle.write(contentsOf: line)
                generated += r.tokens.count
            }
            log(String(format: "generate: %d/%d prompts, %.1f tokens/s", min(first + round, texts.count), texts.count,
                       Double(generated) / Date().timeIntervalSince(start)))
        }
    }
}
