import ArgumentParser
import Foundation
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
        if json {
            var object: [String: Any] = ["name": name]
            for (k, v) in fields { object[k] = v }
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(text)
        }
        fflush(stdout)
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
        abstract: "Prefill and decode speed of the fp32 model, and the memory bandwidth it implies.")

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
    @Option(help: "Repetitions; the fastest is reported.")
    var repeats = 3
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let lm = try LanguageModel(checkpoint: try openCheckpoint(model))
            let decoder = lm.decoder
            let threads = Threads.count
            if !output.json {
                print("model \(model): \(lm.config.parameterCount) parameters, fp32, \(threads) threads")
            }

            // Memory bandwidth of this machine, measured now so the ratio is like for like.
            let bandwidth = MemoryBandwidth.measure(bytes: 512 << 20, repeats: 8)
            output.emit("memory_bandwidth",
                        [("copy_gb_per_s", bandwidth.copy / 1e9), ("read_gb_per_s", bandwidth.read / 1e9), ("threads", threads)],
                        text: String(format: "memory: copy %.1f GB/s (read+write), read %.1f GB/s", bandwidth.copy / 1e9, bandwidth.read / 1e9))

            // A prompt of real text, repeated to the wanted length.
            let text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May? "
            var prefillPrompt: [Int] = []
            while prefillPrompt.count < promptTokens { prefillPrompt += lm.tokenizer.encode(text) }
            prefillPrompt = Array(prefillPrompt.prefix(promptTokens))

            // Prefill: one forward over the whole prompt.
            var best = Double.infinity
            for _ in 0..<repeats {
                let cache = decoder.makeCache(capacities: [prefillPrompt.count])
                best = min(best, seconds { _ = decoder.forward([SequenceChunk(sequence: 0, tokens: prefillPrompt)], cache: cache) })
            }
            let prefill = Double(prefillPrompt.count) / best
            output.emit("prefill", [("batch", 1), ("prompt_tokens", prefillPrompt.count), ("tokens_per_s", prefill), ("threads", threads)],
                        text: String(format: "prefill  %4d tokens        %8.1f tokens/s", prefillPrompt.count, prefill))

            // Decode: time only the steps after the prompt, greedy, never stopping early.
            let decodePrompt = lm.tokenizer.encode(self.prompt)
            let weightBytes = Double(decodeWeightBytes(lm.decoder.weights))
            var single = 0.0
            for b in [1, batch] {
                var bestRate = 0.0
                for _ in 0..<repeats {
                    bestRate = max(bestRate, decodeRate(decoder, prompt: decodePrompt, batch: b))
                }
                if b == 1 { single = bestRate }
                let steps = bestRate / Double(b)
                let implied = steps * weightBytes
                var fields: [(String, Any)] = [("batch", b), ("tokens_per_s", bestRate), ("decode_tokens", decodeTokens),
                                               ("threads", threads), ("implied_gb_per_s", implied / 1e9),
                                               ("fraction_of_copy_bandwidth", implied / bandwidth.copy),
                                               ("fraction_of_read_bandwidth", implied / bandwidth.read)]
                var line = String(format: "decode   batch %-2d            %8.1f tokens/s   weights streamed at %.1f GB/s = %.0f%% of copy, %.0f%% of read bandwidth",
                                  b, bestRate, implied / 1e9, 100 * implied / bandwidth.copy, 100 * implied / bandwidth.read)
                if b > 1 {
                    fields.append(("speedup_over_batch_1", bestRate / single))
                    line += String(format: "   (%.1fx batch 1)", bestRate / single)
                }
                output.emit("decode", fields, text: line)
            }
            if !output.json {
                print(String(format: "weights read per decode step: %.0f MB (fp32)", weightBytes / 1e6))
            }
        }
    }

    /// Tokens per second over `decodeTokens` steps of `batch` sequences after a short prefill.
    func decodeRate(_ decoder: Decoder, prompt: [Int], batch: Int) -> Double {
        let cache = decoder.makeCache(capacities: Array(repeating: prompt.count + decodeTokens + 1, count: batch))
        var logits = decoder.forward((0..<batch).map { SequenceChunk(sequence: $0, tokens: prompt) }, cache: cache)
        let v = decoder.config.vocabSize
        let time = seconds {
            for _ in 0..<decodeTokens {
                let next = (0..<batch).map { s -> SequenceChunk in
                    let row = logits.row(s)
                    var best = 0
                    for i in 1..<v where row[i] > row[best] { best = i }
                    return SequenceChunk(sequence: s, tokens: [best])
                }
                logits = decoder.forward(next, cache: cache)
            }
        }
        return Double(batch * decodeTokens) / time
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
