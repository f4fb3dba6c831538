import ArgumentParser
import Bench
import Foundation
import Tensors

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print ratios measured side by side in one run (release builds only).",
        subcommands: [BenchDecode.self, BenchTrain.self, BenchWire.self, BenchCluster.self, BenchEval.self, BenchSync.self, BenchFlatQuant.self])
}

/// Options every bench subcommand shares.
struct BenchOutput: ParsableArguments {
    @Flag(help: "Print one JSON object per measurement instead of a table.")
    var json = false

    /// Prints a measurement as a table line, or as its JSON line.
    func emit<R: BenchRecord>(_ record: R, text: String) {
        print(json ? record.jsonLine() : text)
        fflush(stdout)
    }

    /// A measurement that has no table line of its own (the table shows it in a combined row or
    /// at the end): printed with --json only.
    func emitJSONOnly<R: BenchRecord>(_ record: R) {
        if json { emit(record, text: "") }
    }
}

struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Prefill and decode speed of the fp32 model, and the memory bandwidth it implies.",
        discussion: """
            Batch-1 and batched decode are measured in each of --repeats rounds (in alternating \
            order), every decode between two memory-bandwidth measurements; a decode's share of the \
            bandwidth is taken against the mean of the two around it, since a shared machine's \
            bandwidth drifts. Each figure is the median over the rounds with its min and max; the \
            speedup of the batch is the ratio of the medians.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.")
    var model = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "Prompt tokens for the prefill measurement.")
    var promptTokens = 128
    @Option(help: "New tokens per sequence in the decode measurements.")
    var decodeTokens = 64
    @Option(help: "Sequences in the batched decode measurement.")
    var batch = 8
    @Option(help: "Prompt for the decode measurements (the one scripts/bench-transformers.py uses).")
    var prompt = "The capital of France is"
    @Option(help: "Rounds of (batch-1 decode, batched decode), each decode followed by a bandwidth measurement; medians are reported.")
    var repeats = 7
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    func validate() throws {
        guard repeats >= 1, batch >= 1, decodeTokens >= 1, promptTokens >= 1 else {
            throw ValidationError("--repeats, --batch, --decode-tokens and --prompt-tokens must be at least 1")
        }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            var options = DecodeBench.Options()
            options.promptTokens = promptTokens
            options.decodeTokens = decodeTokens
            options.batch = batch
            options.prompt = prompt
            options.repeats = repeats
            let bench = try DecodeBench(model: model)
            if !output.json {
                print("model \(model): \(bench.model.config.parameterCount) parameters, fp32, \(Threads.count) threads, median [min-max] of \(repeats) rounds")
            }
            let result = bench.run(options)

            let m = result.memoryBandwidth
            output.emit(m, text: "memory   copy " + spread("%.1f", m.copyGBPerS, m.copyGBPerSMin, m.copyGBPerSMax)
                            + " GB/s (read+write), read " + spread("%.1f", m.readGBPerS, m.readGBPerSMin, m.readGBPerSMax) + " GB/s")
            let p = result.prefill
            output.emit(p, text: String(format: "prefill  %4d tokens     ", p.promptTokens)
                            + spread("%.1f", p.tokensPerS, p.tokensPerSMin, p.tokensPerSMax) + " tokens/s")
            for d in result.decodes {
                var line = String(format: "decode   batch %-2d          ", d.batch) + spread("%.1f", d.tokensPerS, d.tokensPerSMin, d.tokensPerSMax)
                    + String(format: " tokens/s   weights streamed at %.1f GB/s = ", d.impliedGBPerS)
                    + spread("%.0f", 100 * d.fractionOfCopyBandwidth, 100 * d.fractionOfCopyBandwidthMin, 100 * d.fractionOfCopyBandwidthMax)
                    + String(format: "%% of the copy bandwidth measured around each decode (%.0f%% of the median copy), %.0f%% of read bandwidth",
                             100 * d.fractionOfCopyBandwidthOfMedians, 100 * d.fractionOfReadBandwidth)
                if let speedup = d.speedupOverBatch1, let low = d.speedupOverBatch1PerRoundMin,
                   let median = d.speedupOverBatch1PerRoundMedian, let high = d.speedupOverBatch1PerRoundMax {
                    line += String(format: "   (%.2fx batch 1; per round %.2f/%.2f/%.2fx min/median/max)", speedup, low, median, high)
                }
                output.emit(d, text: line)
            }
            if !output.json {
                print(String(format: "weights read per decode step: %.0f MB (fp32)", Double(result.weightBytes) / 1e6))
            }
        }
    }

    /// "median [min-max]".
    func spread(_ format: String, _ median: Double, _ min: Double, _ max: Double) -> String {
        String(format: format, median) + " [" + String(format: format, min) + "-" + String(format: format, max) + "]"
    }
}
