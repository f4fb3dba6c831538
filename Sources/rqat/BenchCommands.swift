import ArgumentParser
import Foundation
import Jobs
import Model
import Tensors

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print ratios measured side by side in one run (release builds only).",
        subcommands: [BenchDecode.self, BenchTrain.self, BenchWire.self, BenchCluster.self])
}

/// Options every bench subcommand shares.
struct BenchOutput: ParsableArguments {
    @Flag(help: "Print one JSON object per measurement instead of a table.")
    var json = false

    /// Prints a measurement as a table line, or as JSON with its defining parameters.
    func emit(_ name: String, _ fields: [(String, Any)], text: String) {
        print(json ? Self.jsonLine(name, fields) : text)
        fflush(stdout)
    }

    /// A measurement that has no table line of its own (the table shows it in a combined row or
    /// at the end): printed with --json only.
    func emitJSONOnly(_ name: String, _ fields: [(String, Any)]) {
        if json { emit(name, fields, text: "") }
    }

    /// A measurement as one JSON object: `name` and the fields, keys sorted. JSON has no NaN or
    /// infinity: such a value becomes null.
    static func jsonLine(_ name: String, _ fields: [(String, Any)]) -> String {
        var object: [String: Any] = ["name": name]
        for (k, v) in fields {
            if let d = v as? Double, !d.isFinite { object[k] = NSNull() } else { object[k] = v }
        }
        return String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}

func seconds(_ body: () -> Void) -> Double {
    let t0 = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
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

    /// Median, min and max of some measurements.
    struct Spread {
        let median: Double, min: Double, max: Double
        init(_ values: [Double]) {
            let v = values.sorted()
            median = v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
            min = v.first!
            max = v.last!
        }
        /// JSON fields `name` (the median), `name_min`, `name_max`.
        func fields(_ name: String, scale: Double = 1) -> [(String, Any)] {
            [(name, median * scale), (name + "_min", min * scale), (name + "_max", max * scale)]
        }
        func text(_ format: String, scale: Double = 1) -> String {
            String(format: format, median * scale) + " [" + String(format: format, min * scale)
                + "-" + String(format: format, max * scale) + "]"
        }
    }

    func validate() throws {
        guard repeats >= 1, batch >= 1, decodeTokens >= 1, promptTokens >= 1 else {
            throw ValidationError("--repeats, --batch, --decode-tokens and --prompt-tokens must be at least 1")
        }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let lm = try LanguageModel(checkpoint: try openCheckpoint(model))
            let decoder = lm.decoder
            let threads = Threads.count
            if !output.json {
                print("model \(model): \(lm.config.parameterCount) parameters, fp32, \(threads) threads, median [min-max] of \(repeats) rounds")
            }

            // A prompt of real text, repeated to the wanted length.
            let text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May? "
            var prefillPrompt: [Int] = []
            while prefillPrompt.count < promptTokens { prefillPrompt += lm.tokenizer.encode(text) }
            prefillPrompt = Array(prefillPrompt.prefix(promptTokens))

            // Prefill: one forward over the whole prompt, one untimed first.
            var prefillRates: [Double] = []
            for round in 0...repeats {
                let cache = decoder.makeCache(capacities: [prefillPrompt.count])
                let t = seconds { _ = decoder.forward([SequenceChunk(sequence: 0, tokens: prefillPrompt)], cache: cache) }
                if round > 0 { prefillRates.append(Double(prefillPrompt.count) / t) }
            }
            let prefill = Spread(prefillRates)

            // Rounds of batch-1 and batched decode (in alternating order), every decode between
            // two memory-bandwidth measurements (best of 3 copies and 3 sums of 512 MiB, buffers
            // kept): a shared machine's bandwidth drifts by tens of percent within a minute, so
            // each decode is compared with the bandwidth measured around it.
            let decodePrompt = lm.tokenizer.encode(self.prompt)
            let weightBytes = Double(decodeWeightBytes(lm.decoder.weights))
            let meter = MemoryBandwidth.Meter(bytes: 512 << 20)
            let batches = batch == 1 ? [1] : [1, batch]
            for b in batches { _ = decodeRate(decoder, prompt: decodePrompt, batch: b, steps: 4) }  // warm-up
            var bandwidth = [meter.measure(repeats: 3)]
            var rates: [Int: [Double]] = [:]
            var copyAround: [Int: [Double]] = [:]   // mean copy bandwidth before and after each decode
            for round in 0..<repeats {
                for b in (round % 2 == 0 ? batches : batches.reversed()) {
                    rates[b, default: []].append(decodeRate(decoder, prompt: decodePrompt, batch: b, steps: decodeTokens))
                    bandwidth.append(meter.measure(repeats: 3))
                    copyAround[b, default: []].append((bandwidth[bandwidth.count - 2].copy + bandwidth.last!.copy) / 2)
                }
            }

            let copySpread = Spread(bandwidth.map(\.copy)), readSpread = Spread(bandwidth.map(\.read))
            output.emit("memory_bandwidth",
                        copySpread.fields("copy_gb_per_s", scale: 1e-9) + readSpread.fields("read_gb_per_s", scale: 1e-9)
                            + [("measurements", bandwidth.count), ("repeats", repeats), ("threads", threads)],
                        text: "memory   copy " + copySpread.text("%.1f", scale: 1e-9) + " GB/s (read+write), read "
                            + readSpread.text("%.1f", scale: 1e-9) + " GB/s")
            output.emit("prefill", [("batch", 1), ("prompt_tokens", prefillPrompt.count), ("repeats", repeats), ("threads", threads)]
                            + prefill.fields("tokens_per_s"),
                        text: String(format: "prefill  %4d tokens     ", prefillPrompt.count) + prefill.text("%.1f") + " tokens/s")

            let single = Spread(rates[1]!)
            for b in batches {
                let r = Spread(rates[b]!)
                let implied = r.median / Double(b) * weightBytes
                // Each decode's weight stream over the copy bandwidth measured around it.
                let share = Spread(zip(rates[b]!, copyAround[b]!).map { $0 / Double(b) * weightBytes / $1 })
                var fields: [(String, Any)] = [("batch", b), ("decode_tokens", decodeTokens), ("repeats", repeats),
                                               ("threads", threads), ("implied_gb_per_s", implied / 1e9),
                                               ("fraction_of_read_bandwidth", implied / readSpread.median),
                                               ("fraction_of_copy_bandwidth_of_medians", implied / copySpread.median)]
                fields += share.fields("fraction_of_copy_bandwidth")
                fields += r.fields("tokens_per_s")
                var line = String(format: "decode   batch %-2d          ", b) + r.text("%.1f")
                    + String(format: " tokens/s   weights streamed at %.1f GB/s = ", implied / 1e9) + share.text("%.0f", scale: 100)
                    + String(format: "%% of the copy bandwidth measured around each decode (%.0f%% of the median copy), %.0f%% of read bandwidth",
                             100 * implied / copySpread.median, 100 * implied / readSpread.median)
                if b > 1 {
                    let perRound = Spread(zip(rates[b]!, rates[1]!).map { $0 / $1 })
                    fields += [("speedup_over_batch_1", r.median / single.median),
                               ("speedup_over_batch_1_per_round_min", perRound.min),
                               ("speedup_over_batch_1_per_round_median", perRound.median),
                               ("speedup_over_batch_1_per_round_max", perRound.max)]
                    line += String(format: "   (%.2fx batch 1; per round %.2f/%.2f/%.2fx min/median/max)", r.median / single.median,
                                          perRound.min, perRound.median, perRound.max)
                }
                output.emit("decode", fields, text: line)
            }
            if !output.json {
                print(String(format: "weights read per decode step: %.0f MB (fp32)", weightBytes / 1e6))
            }
        }
    }

    /// Tokens per second over `steps` decode steps of `batch` sequences after a short prefill.
    func decodeRate(_ decoder: Decoder, prompt: [Int], batch: Int, steps: Int) -> Double {
        let cache = decoder.makeCache(capacities: Array(repeating: prompt.count + steps + 1, count: batch))
        var logits = decoder.forward((0..<batch).map { SequenceChunk(sequence: $0, tokens: prompt) }, cache: cache)
        let v = decoder.config.vocabSize
        let time = seconds {
            for _ in 0..<steps {
                let next = (0..<batch).map { s -> SequenceChunk in
                    let row = logits.row(s)
                    var best = 0
                    for i in 1..<v where row[i] > row[best] { best = i }
                    return SequenceChunk(sequence: s, tokens: [best])
                }
                logits = decoder.forward(next, cache: cache)
            }
        }
        return Double(batch * steps) / time
    }

    /// Bytes of weights a decode step must read: every matrix and norm, and the LM head
    /// (the embedding table itself is only gathered, one row per token).
    func decodeWeightBytes(_ w: DecoderWeights) -> Int {
        var n = w.lmHead.count + w.finalNorm.count
        for l in w.layers {
            n += l.inputNorm.count + l.qkv.count + (l.qkvBias?.count ?? 0) + (l.qNorm?.count ?? 0) + (l.kNorm?.count ?? 0)
            n += l.output.count + l.postAttentionNorm.count + l.gateUp.count + l.down.count
        }
        return n * 4
    }
}
