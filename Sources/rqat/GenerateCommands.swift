import ArgumentParser
import Cluster
import Foundation
import Eval
import Jobs
import Formats
import Model

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt (streamed to stdout), or for every prompt of a file (JSONL out).",
        discussion: """
            With --prompts FILE (one prompt per line, or JSONL with a "prompt" field) and --out FILE, the \
            prompts are generated in batches and each result is written as a JSON line \
            {"prompt", "completion", "text", "finish", "prompt_tokens", "completion_tokens"}, where \
            "text" is the whole sequence as the model saw it (chat template included): the teacher \
            traces that `rqat ppl` and PTQ calibration (`--calib`) read, and `rqat sft` can train on.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.")
    var model: String
    @Option(help: "The prompt text.")
    var prompt: String?
    @Option(help: "A file of prompts: one per line, or JSONL with a \"prompt\" field.")
    var prompts: String?
    @Option(help: "With --prompts: the JSONL file to write.")
    var out: String?
    @Option(help: "With --prompts: sequences generated together.")
    var batch = 8
    @Flag(help: "Wrap the prompt as a user message in the model's chat template.")
    var chat = false
    @Option(help: "Maximum number of new tokens.")
    var maxTokens = 256
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0
    @Option(help: "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).")
    var topP: Float = 1
    @Option(help: "Keep only the k most likely tokens (0 = off).")
    var topK = 0
    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        guard temperature >= 0 else { throw ValidationError("--temperature must be >= 0") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard topK >= 0 else { throw ValidationError("--top-k must be >= 0") }
        guard (prompt == nil) != (prompts == nil) else { throw ValidationError("give exactly one of --prompt and --prompts") }
        guard (prompts == nil) == (out == nil) else { throw ValidationError("--prompts and --out go together") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let lm = try LanguageModel(checkpoint: try Checkpoint.open(model))
            if let prompts, let out {
                let job = GenerationJob(chat: chat, maxTokens: maxTokens, temperature: temperature, topP: topP, topK: topK,
                                        seed: seed, batch: batch)
                try job.run(lm, promptsPath: prompts, outPath: out, log: printErr)
                return
            }
            guard !MPI.isInitialized else { throw CLIError("under mpirun, generate takes --prompts FILE --out FILE") }
            let ids = lm.encodePrompt(prompt!, chat: chat)
            guard !ids.isEmpty else { throw CLIError("the prompt is empty after tokenization") }
            guard ids.count + maxTokens <= lm.config.maxPositionEmbeddings else {
                throw CLIError("prompt (\(ids.count) tokens) + --max-tokens \(maxTokens) exceeds the context of \(lm.config.maxPositionEmbeddings)")
            }
            let generator = Generator(decoder: lm.decoder, stopTokens: lm.stopTokens)
            var stream = StreamingDecoder(tokenizer: lm.tokenizer)
            let start = DispatchTime.now()
            let request = GenerationRequest(prompt: ids, maxNewTokens: maxTokens,
                                            sampling: SamplingParams(temperature: temperature, topP: topP, topK: topK, seed: seed))
            let result = generator.generate([request], onToken: { _, token in
                guard !lm.stopTokens.contains(token) else { return }
                let piece = stream.push(token)
                if !piece.isEmpty {
                    FileHandle.standardOutput.write(Data(piece.utf8))
                }
            })[0]
            let tail = stream.finish()
            FileHandle.standardOutput.write(Data((tail + "\n").utf8))
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            printErr(String(format: "[%d prompt tokens, %d generated (%@), %.1f tokens/s]",
                            ids.count, result.tokens.count, result.finish.rawValue,
                            Double(result.tokens.count) / seconds))
        }
    }
}

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppl",
        abstract: "Perplexity of a text file (one sequence per line) or of the `text` field of a JSONL file.",
        discussion: "Each line or record is scored as its own sequence from its first token, as transformers does with labels=input_ids; the reported perplexity is exp of the token-weighted mean NLL.")

    @Option(help: "A .gguf file or a Hugging Face model directory.")
    var model: String
    @Option(help: "A .txt file (one sequence per non-empty line) or a .jsonl file with a `text` field.")
    var data: String
    @Option(help: "Truncate each sequence to this many tokens (0 = the model's context).")
    var maxTokens = 0
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            var texts = try TextRecords.read(data, field: "text", what: "file")
            // A line of spaces is no sequence to score; JSONL records are scored as they are.
            if !data.hasSuffix(".jsonl") { texts = texts.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty } }
            let lm = try LanguageModel(checkpoint: try Checkpoint.open(model))
            let limit = maxTokens > 0 ? maxTokens : lm.config.maxPositionEmbeddings
            let sequences = texts.map { Array(lm.tokenizer.encode($0).prefix(limit)) }
            let result = lm.decoder.perplexity(of: sequences)
            guard result.predictedTokens > 0 else {
                throw CLIError("\(data): no sequence has two or more tokens to score")
            }
            print(String(format: "perplexity %.4f  (mean NLL %.5f over %d predicted tokens, %d sequences)",
                         result.perplexity, result.totalNLL / Double(result.predictedTokens),
                         result.predictedTokens, sequences.count))
        }
    }
}
