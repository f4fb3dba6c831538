import ArgumentParser
import Eval
import Foundation
import Jobs
import Reasoning

extension Split: ExpressibleByArgument {}

/// Where the fetched data lives (`scripts/fetch-assets.sh` fills it).
struct AssetOptions: ParsableArguments {
    @Option(help: "Folder of fetched data (GSM-Symbolic templates); default: $RQAT_ASSETS or ./assets.")
    var assets: String?

    var url: URL {
        URL(fileURLWithPath: assets ?? ProcessInfo.processInfo.environment["RQAT_ASSETS"] ?? "assets")
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy of a model on a reasoning task (strict and flexible answer checking).",
        discussion: """
            The default is the paper's setting: sampling at temperature 0.6, top-p 0.95, one pass per \
            seed (42, 43, 44), accuracy averaged over the seeds; --greedy makes one argmax pass. \
            Sequences are generated --batch at a time, each stopping on its own. Under mpirun every \
            rank takes a share of the problems; rank 0 prints and writes --out (one JSON line per \
            problem and seed: id, seed, prompt, completion, gold, strict/flexible answer and verdict, \
            the flexible rule, finish, tokens).
            """)

    @Option(help: "A .gguf file, a Hugging Face model directory or a GPTQ-packed directory.")
    var model: String
    @Option(help: "gsm8k, gsm-symbolic or arith.")
    var task: String
    @Option(help: "train, validation or test.")
    var split: Split = .test
    @Option(help: "Problems to ask (the whole split when smaller).")
    var limit = 100
    @Option(help: "Which problems are drawn (unlimited tasks) or in which order.")
    var dataSeed: UInt64 = 0
    @Option(help: "Sampling seeds, comma-separated; accuracy is averaged over them.")
    var seeds = "42,43,44"
    @Option(help: "Sampling temperature.")
    var temperature: Float = 0.6
    @Option(help: "Nucleus sampling mass (1 = off).")
    var topP: Float = 0.95
    @Flag(help: "Greedy decoding, one pass (ignores --seeds, --temperature, --top-p).")
    var greedy = false
    @Option(help: "Maximum new tokens per answer.")
    var maxTokens = 512
    @Option(help: "Sequences generated at once.")
    var batch = 32
    @Option(help: "Cut the jobs into this many shares, each generated on its own (what N ranks do); default: the number of ranks.")
    var shares: Int?
    @Option(help: "Prompt format: chat, plain, or auto (chat when the tokenizer has ChatML's end-of-turn token).")
    var format = "auto"
    @Option(help: "Write one JSON line per problem and seed here.")
    var out: String?
    @Flag(help: "Print the summary as JSON instead of a table.")
    var json = false
    @OptionGroup var assets: AssetOptions
    @OptionGroup var runtime: RuntimeOptions

    func parsedSeeds() throws -> [UInt64] { try parseSeeds(seeds) }

    func validate() throws {
        _ = try parsedSeeds()
        guard limit > 0 else { throw ValidationError("--limit must be positive") }
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard greedy || temperature > 0 else { throw ValidationError("--temperature must be positive (or pass --greedy)") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard ["auto", "chat", "plain"].contains(format) else { throw ValidationError("--format must be auto, chat or plain") }
        if let shares { guard shares > 0 else { throw ValidationError("--shares must be positive") } }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let settings = AccuracySettings(seeds: try parsedSeeds(), temperature: greedy ? 0 : temperature, topP: topP,
                                            maxTokens: maxTokens, batch: batch, shares: shares ?? 1)
            let job = EvalJob(model: model, task: task, split: split, limit: limit, dataSeed: dataSeed, settings: settings,
                              chat: format == "auto" ? nil : format == "chat", out: out.map { URL(fileURLWithPath: $0) },
                              assets: assets.url)
            let result = try job.run(log: printErr)
            guard result.reports else { return }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(result.summary), as: UTF8.self))
            } else {
                print(Self.table(result.summary))
            }
        }
    }

    static func table(_ s: AccuracySummary) -> String {
        let sampling = s.settings.greedy ? "greedy"
            : String(format: "temperature %.2g, top-p %.2g, seeds %@", s.settings.temperature, s.settings.topP,
                     s.settings.seeds.map(String.init).joined(separator: ","))
        func row(_ name: String, _ f: AccuracyFigure) -> String {
            var line = String(format: "%@ accuracy %5.1f%%  95%% interval %.1f-%.1f%%", name, 100 * f.mean, 100 * f.low, 100 * f.high)
            if f.perSeed.count > 1 { line += String(format: "  seeds %.1f-%.1f%%", 100 * f.seedMin, 100 * f.seedMax) }
            return line
        }
        return """
            \(s.model) on \(s.task) \(s.split): \(s.problems) problems, \(sampling), max \(s.settings.maxTokens) tokens, batch \(s.settings.batch)
            \(row("strict  ", s.strict))
            \(row("flexible", s.flexible))
            \(s.generatedTokens) tokens generated in \(String(format: "%.1f", s.seconds)) s (\(String(format: "%.1f", s.tokensPerSecond)) tokens/s), \(s.truncated) answers cut at --max-tokens
            """
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Write a task's problems as JSONL records {\"id\", \"prompt\", \"completion\", \"answer\", ...}.")

    @Argument(help: "gsm8k, gsm-symbolic or arith.")
    var task: String
    @Option(help: "train, validation or test.")
    var split: Split = .train
    @Option(help: "Problems to write (the whole split when smaller).")
    var count = 100
    @Option(help: "Seed of the draw.")
    var seed: UInt64 = 0
    @Option(help: "The JSONL file to write.")
    var out: String
    @OptionGroup var assets: AssetOptions

    func validate() throws {
        guard count > 0 else { throw ValidationError("--count must be positive") }
    }

    func run() throws {
        try reportingErrors {
            let written = try DataJob(task: task, split: split, count: count, seed: seed,
                                      out: URL(fileURLWithPath: out), assets: assets.url).run()
            printErr("data: \(written.count) \(task) \(split.rawValue) problems written to \(out)")
        }
    }
}

/// `--seeds 42,43,44` as numbers.
func parseSeeds(_ text: String) throws -> [UInt64] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let values = parts.compactMap { UInt64($0) }
    guard !values.isEmpty, values.count == parts.count else {
        throw ValidationError("--seeds must be comma-separated non-negative integers, e.g. 42,43,44")
    }
    return values
}
