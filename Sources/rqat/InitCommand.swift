import ArgumentParser
import Formats
import Foundation
import Jobs
import Reasoning

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a random-weight checkpoint (Hugging Face layout) for `rqat sft` to train from scratch.",
        discussion: """
            OUT gets config.json, model.safetensors (fp32) and the tokenizer files. Weights are normal \
            with std 0.02 (attention output and MLP down: 0.02 / sqrt(2 x layers)), norms 1, the LM head \
            tied to the embedding. Hidden, intermediate and head sizes must be 2^k x 1, 12, 20, 28, 36 or 40 \
            so the rotation (Hadamard) transforms exist for them. --tokenizer takes a tokenizer.json, a \
            directory holding one, or the name of a built-in task (arith), whose own tokenizer is learnt \
            and written. Prints a JSON summary on stdout.
            Example: rqat init --arch llama --hidden 256 --layers 4 --tokenizer arith --out runs/teacher-init
            """)

    @Option(help: "llama or qwen3.") var arch = "llama"
    @Option(help: "Hidden size.") var hidden: Int
    @Option(help: "Decoder blocks.") var layers: Int
    @Option(help: "Attention heads (default hidden / 64).") var heads: Int?
    @Option(help: "Key/value heads (default: as many as heads).") var kvHeads: Int?
    @Option(help: "MLP size (default 4 x hidden).") var intermediate: Int?
    @Option(help: "Per-head size (default hidden / heads; qwen3 may differ).") var headDim: Int?
    @Option(help: "Context length the config declares.") var maxPositions = 1024
    @Flag(help: "A separate LM head instead of one tied to the embedding.") var untied = false
    @Option(help: "tokenizer.json, a directory with one, or a built-in task name (arith).") var tokenizer: String
    @Option(help: "Seed of the random weights.") var seed: UInt64 = 0
    @Option(help: "Output directory.") var out: String

    func validate() throws {
        guard ["llama", "qwen3"].contains(arch) else { throw ValidationError("--arch must be llama or qwen3") }
    }

    func run() throws {
        try reportingErrors {
            var job = InitJob(family: arch == "qwen3" ? .qwen3 : .llama, hiddenSize: hidden, layers: layers)
            job.heads = heads
            job.kvHeads = kvHeads
            job.intermediateSize = intermediate
            job.headDim = headDim
            job.maxPositions = maxPositions
            job.tieEmbeddings = !untied
            job.seed = seed
            let tokenizerURL = try tokenizerFile()
            var summary = try job.run(tokenizerURL: tokenizerURL, out: URL(fileURLWithPath: out))
            if tokenizer == ArithTask.default.name {
                // The learnt files now live in OUT; the temporary copy is not worth naming.
                try? FileManager.default.removeItem(at: tokenizerURL.deletingLastPathComponent())
                summary.tokenizer = tokenizer
            }
            let data = try JobJSON.encoder().encode(summary)
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// The tokenizer.json to use: the given file, the one in the given directory, or a built-in
    /// task's learnt tokenizer written to a fresh temporary directory.
    private func tokenizerFile() throws -> URL {
        if tokenizer == ArithTask.default.name {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-init-tokenizer-\(UUID().uuidString)")
            try ArithTask.trainTokenizer().write(to: dir)
            return dir.appendingPathComponent("tokenizer.json")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: tokenizer, isDirectory: &isDirectory) else {
            throw CLIError("--tokenizer \(tokenizer): no such file or directory (give a tokenizer.json, a directory with one, or arith)")
        }
        let url = URL(fileURLWithPath: tokenizer)
        return isDirectory.boolValue ? url.appendingPathComponent("tokenizer.json") : url
    }
}
