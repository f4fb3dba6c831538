import ArgumentParser
import Foundation
import Formats
import Model
import Quant
import Tensors

struct PTQCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptq",
        abstract: "Post-training quantization (RTN or GPTQ) of the decoder-block linear layers, saved in the GPTQ packed format.",
        discussion: """
            Calibration (--calib) is a text file (one sequence per line) or JSONL with a "text" field, e.g. \
            teacher traces from `rqat generate --prompts ... --out traces.jsonl`. Its tokens are \
            concatenated and cut into windows of --seq-len tokens; the first --calib-samples windows are \
            used. GPTQ needs calibration; RTN uses it only to report each layer's output error. \
            The output directory loads in every rqat command (and is laid out as GPTQ checkpoints are).
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.") var model: String
    @Option(help: "Scheme, e.g. w3g128, w4g128-sym, w4 (\(QuantScheme.validForms)).") var scheme: String
    @Option(help: "rtn or gptq.") var method = "gptq"
    @Option(help: "Calibration data (text lines or JSONL with \"text\").") var calib: String?
    @Option(help: "Calibration windows to use.") var calibSamples = 128
    @Option(help: "Tokens per calibration window.") var seqLen = 2048
    @Flag(help: "MSE clip search for the group ranges (grid 100, max shrink 0.8, norm 2.4).") var clip = false
    @Flag(help: "GPTQ act-order: quantize columns by decreasing Hessian diagonal.") var actOrder = false
    @Option(help: "GPTQ dampening, as a fraction of the mean Hessian diagonal.") var damp: Double = 0.01
    @Option(help: "Output directory.") var out: String
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let parsed: QuantScheme
            do { parsed = try QuantScheme.parse(scheme) } catch { throw CLIError("\(error)") }
            guard parsed.weightBits != nil else { throw CLIError("ptq quantizes weights: the scheme needs w<bits>") }
            try parsed.requireImplemented(for: "ptq")
            guard let method = PTQMethod(rawValue: method) else { throw CLIError("--method must be rtn or gptq") }
            let lm = try LanguageModel(checkpoint: try openCheckpoint(model))

            var windows: [[Int]] = []
            if let calib {
                windows = try calibrationWindows(calib, tokenizer: lm.tokenizer, eos: lm.tokenizer.eosTokenId)
                guard !windows.isEmpty else {
                    throw FormatError(calib, "no usable calibration sequence (need at least 16 tokens of text)")
                }
                printErr("ptq: \(windows.count) calibration windows of up to \(seqLen) tokens from \(calib)")
            }
            var options = PTQOptions(scheme: parsed, method: method, clipSearch: clip ? .gptq : nil)
            options.gptq.actOrder = actOrder
            options.gptq.dampPercent = damp
            let start = Date()
            let result = try PTQ.quantize(decoder: lm.decoder, calibration: windows, options: options) { printErr($0) }
            if let total = result.totalRelativeOutputError {
                printErr(String(format: "ptq: sum of relative output errors over %d matrices: %.4f", result.reports.count, total))
            }

            let tokenizerDir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("rqat-tok-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: tokenizerDir) }
            try lm.tokenizer.writeHuggingFaceFiles(to: tokenizerDir, chatTemplate: lm.chatTemplate,
                                                   modelMaxLength: lm.config.maxPositionEmbeddings)
            var extra: [String: Any] = ["desc_act": actOrder, "damp_percent": damp,
                                        "rqat": ["method": method.rawValue, "clip_search": clip,
                                                 "calibration": calib ?? "", "calibration_windows": windows.count,
                                                 "seq_len": seqLen]]
            if let total = result.totalRelativeOutputError { extra["rqat_sum_relative_output_error"] = total }
            try QuantizedCheckpoint.save(directory: URL(fileURLWithPath: out), config: lm.config,
                                         fullPrecision: PTQ.fullPrecisionTensors(lm.decoder.weights),
                                         quantized: result.quantized, scheme: parsed, method: method.rawValue,
                                         extra: extra,
                                         extraFiles: ["tokenizer.json", "tokenizer_config.json"].map { tokenizerDir.appendingPathComponent($0) })
            printErr(String(format: "ptq: wrote %@ in %.0f s", out, Date().timeIntervalSince(start)))
        }
    }

    /// Tokens of every line / "text" record, joined with EOS, cut into windows of seqLen.
    func calibrationWindows(_ path: String, tokenizer: BPETokenizer, eos: Int?) throws -> [[Int]] {
        guard let content = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw FormatError(path, "cannot read the calibration file as UTF-8 text")
        }
        let lines = content.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        var stream: [Int] = []
        for (i, line) in lines.enumerated() {
            var text = line
            if path.hasSuffix(".jsonl") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let t = object["text"] as? String else {
                    throw FormatError(path, "line \(i + 1) is not a JSON object with a string field \"text\"")
                }
                text = t
            }
            stream += tokenizer.encode(text)
            if let eos { stream.append(eos) }
            if stream.count >= seqLen * calibSamples { break }
        }
        var windows: [[Int]] = []
        var start = 0
        while start < stream.count && windows.count < calibSamples {
            let window = Array(stream[start..<min(start + seqLen, stream.count)])
            if window.count >= 16 { windows.append(window) }
            start += seqLen
        }
        return windows
    }
}
