import Formats
import Foundation
import Jobs
import Model
import Tensors

/// `rqat bench decode`: prefill and decode speed of the fp32 model, and the share of the
/// memory bandwidth its weight stream takes. Batch-1 and batched decode run in each of
/// `repeats` rounds (in alternating order), every decode between two bandwidth measurements,
/// since a shared machine's bandwidth drifts by tens of percent within a minute.
package struct DecodeBench {
    package struct Options: Sendable {
        package var promptTokens = 128
        package var decodeTokens = 64
        package var batch = 8
        /// The prompt of the decode measurements (the one scripts/bench-transformers.py uses).
        package var prompt = "The capital of France is"
        package var repeats = 7
        /// Buffer of the bandwidth measurements: far larger than the caches, so they measure memory.
        package var bandwidthBytes = 512 << 20
        package init() {}
    }

    package struct Result: Codable {
        package var memoryBandwidth: MemoryBandwidthRecord
        package var prefill: PrefillRecord
        /// Batch 1 first, then the batch of the options (when it is not 1).
        package var decodes: [DecodeRecord]
        /// Bytes of weights one decode step reads (fp32).
        package var weightBytes: Int
    }

    package let model: LanguageModel

    package init(model path: String) throws {
        model = try LanguageModel(checkpoint: try Checkpoint.open(path))
    }

    package func run(_ options: Options) -> Result {
        let decoder = model.decoder
        let threads = Threads.count
        let repeats = options.repeats

        // A prompt of real text, repeated to the wanted length.
        let text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May? "
        var prefillPrompt: [Int] = []
        while prefillPrompt.count < options.promptTokens { prefillPrompt += model.tokenizer.encode(text) }
        prefillPrompt = Array(prefillPrompt.prefix(options.promptTokens))

        // Prefill: one forward over the whole prompt, one untimed first.
        var prefillRates: [Double] = []
        for round in 0...repeats {
            let cache = decoder.makeCache(capacities: [prefillPrompt.count])
            let t = seconds { _ = decoder.forward([SequenceChunk(sequence: 0, tokens: prefillPrompt)], cache: cache) }
            if round > 0 { prefillRates.append(Double(prefillPrompt.count) / t) }
        }
        let prefill = Spread(prefillRates)

        // Rounds of batch-1 and batched decode (in alternating order), every decode between
        // two memory-bandwidth measurements (best of 3 copies and 3 sums, buffers
        // kept), so each decode is compared with the bandwidth measured around it.
        let decodePrompt = model.tokenizer.encode(options.prompt)
        let weightBytes = Self.decodeWeightBytes(decoder.weights)
        let meter = MemoryBandwidth.Meter(bytes: options.bandwidthBytes)
        let batches = options.batch == 1 ? [1] : [1, options.batch]
        for b in batches { _ = Self.decodeRate(decoder, prompt: decodePrompt, batch: b, steps: 4) }  // warm-up
        var bandwidth = [meter.measure(repeats: 3)]
        var rates: [Int: [Double]] = [:]
        var copyAround: [Int: [Double]] = [:]   // mean copy bandwidth before and after each decode
        for round in 0..<repeats {
            for b in (round % 2 == 0 ? batches : batches.reversed()) {
                rates[b, default: []].append(Self.decodeRate(decoder, prompt: decodePrompt, batch: b, steps: options.decodeTokens))
                bandwidth.append(meter.measure(repeats: 3))
                copyAround[b, default: []].append((bandwidth[bandwidth.count - 2].copy + bandwidth.last!.copy) / 2)
            }
        }

        let copy = Spread(bandwidth.map(\.copy)), read = Spread(bandwidth.map(\.read))
        let memory = MemoryBandwidthRecord(
            copyGBPerS: copy.median * 1e-9, copyGBPerSMin: copy.min * 1e-9, copyGBPerSMax: copy.max * 1e-9,
            readGBPerS: read.median * 1e-9, readGBPerSMin: read.min * 1e-9, readGBPerSMax: read.max * 1e-9,
            measurements: bandwidth.count, repeats: repeats, threads: threads)
        let prefillRecord = PrefillRecord(batch: 1, promptTokens: prefillPrompt.count, repeats: repeats, threads: threads,
                                          tokensPerS: prefill.median, tokensPerSMin: prefill.min, tokensPerSMax: prefill.max)

        let single = Spread(rates[1]!)
        let decodes = batches.map { b -> DecodeRecord in
            let r = Spread(rates[b]!)
            let implied = r.median / Double(b) * Double(weightBytes)
            // Each decode's weight stream over the copy bandwidth measured around it.
            let share = Spread(zip(rates[b]!, copyAround[b]!).map { $0 / Double(b) * Double(weightBytes) / $1 })
            var record = DecodeRecord(
                batch: b, decodeTokens: options.decodeTokens, repeats: repeats, threads: threads,
                impliedGBPerS: implied / 1e9, fractionOfReadBandwidth: implied / read.median,
                fractionOfCopyBandwidthOfMedians: implied / copy.median,
                fractionOfCopyBandwidth: share.median, fractionOfCopyBandwidthMin: share.min, fractionOfCopyBandwidthMax: share.max,
                tokensPerS: r.median, tokensPerSMin: r.min, tokensPerSMax: r.max)
            if b > 1 {
                let perRound = Spread(zip(rates[b]!, rates[1]!).map { $0 / $1 })
                record.speedupOverBatch1 = r.median / single.median
                record.speedupOverBatch1PerRoundMin = perRound.min
                record.speedupOverBatch1PerRoundMedian = perRound.median
                record.speedupOverBatch1PerRoundMax = perRound.max
            }
            return record
        }
        return Result(memoryBandwidth: memory, prefill: prefillRecord, decodes: decodes, weightBytes: weightBytes)
    }

    /// Tokens per second over `steps` greedy decode steps of `batch` sequences after a short
    /// prefill (the argmax over the vocabulary is part of the time, as in a real decode).
    package static func decodeRate(_ decoder: Decoder, prompt: [Int], batch: Int, steps: Int) -> Double {
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
    package static func decodeWeightBytes(_ w: DecoderWeights) -> Int {
        var n = w.lmHead.weight.storageBytes / 4 + w.finalNorm.count
        for l in w.layers {
            n += l.inputNorm.count + l.qkv.weight.storageBytes / 4 + (l.qkv.bias?.count ?? 0) + (l.qNorm?.count ?? 0) + (l.kNorm?.count ?? 0)
            n += l.output.weight.storageBytes / 4 + l.postAttentionNorm.count + l.gateUp.weight.storageBytes / 4 + l.down.weight.storageBytes / 4
        }
        return n * 4
    }
}

package struct MemoryBandwidthRecord: BenchRecord, Equatable {
    package static let name = "memory_bandwidth"
    package var copyGBPerS: Double, copyGBPerSMin: Double, copyGBPerSMax: Double
    package var readGBPerS: Double, readGBPerSMin: Double, readGBPerSMax: Double
    package var measurements: Int, repeats: Int, threads: Int

    enum CodingKeys: String, CodingKey {
        case measurements, repeats, threads
        case copyGBPerS = "copy_gb_per_s", copyGBPerSMin = "copy_gb_per_s_min", copyGBPerSMax = "copy_gb_per_s_max"
        case readGBPerS = "read_gb_per_s", readGBPerSMin = "read_gb_per_s_min", readGBPerSMax = "read_gb_per_s_max"
    }
}

package struct PrefillRecord: BenchRecord, Equatable {
    package static let name = "prefill"
    package var batch: Int, promptTokens: Int, repeats: Int, threads: Int
    package var tokensPerS: Double, tokensPerSMin: Double, tokensPerSMax: Double

    enum CodingKeys: String, CodingKey {
        case batch, repeats, threads
        case promptTokens = "prompt_tokens"
        case tokensPerS = "tokens_per_s", tokensPerSMin = "tokens_per_s_min", tokensPerSMax = "tokens_per_s_max"
    }
}

package struct DecodeRecord: BenchRecord, Equatable {
    package static let name = "decode"
    package var batch: Int, decodeTokens: Int, repeats: Int, threads: Int
    /// fp32 weight bytes read per step x the median steps per second.
    package var impliedGBPerS: Double
    package var fractionOfReadBandwidth: Double
    package var fractionOfCopyBandwidthOfMedians: Double
    /// Median over the rounds of each decode's share of the copy bandwidth measured around it.
    package var fractionOfCopyBandwidth: Double, fractionOfCopyBandwidthMin: Double, fractionOfCopyBandwidthMax: Double
    package var tokensPerS: Double, tokensPerSMin: Double, tokensPerSMax: Double
    /// Batches above 1: the ratio of the medians, and the spread of the per-round ratios.
    package var speedupOverBatch1: Double?
    package var speedupOverBatch1PerRoundMin: Double?, speedupOverBatch1PerRoundMedian: Double?, speedupOverBatch1PerRoundMax: Double?

    enum CodingKeys: String, CodingKey {
        case batch, repeats, threads
        case decodeTokens = "decode_tokens"
        case impliedGBPerS = "implied_gb_per_s"
        case fractionOfReadBandwidth = "fraction_of_read_bandwidth"
        case fractionOfCopyBandwidthOfMedians = "fraction_of_copy_bandwidth_of_medians"
        case fractionOfCopyBandwidth = "fraction_of_copy_bandwidth"
        case fractionOfCopyBandwidthMin = "fraction_of_copy_bandwidth_min", fractionOfCopyBandwidthMax = "fraction_of_copy_bandwidth_max"
        case tokensPerS = "tokens_per_s", tokensPerSMin = "tokens_per_s_min", tokensPerSMax = "tokens_per_s_max"
        case speedupOverBatch1 = "speedup_over_batch_1"
        case speedupOverBatch1PerRoundMin = "speedup_over_batch_1_per_round_min"
        case speedupOverBatch1PerRoundMedian = "speedup_over_batch_1_per_round_median"
        case speedupOverBatch1PerRoundMax = "speedup_over_batch_1_per_round_max"
    }
}
