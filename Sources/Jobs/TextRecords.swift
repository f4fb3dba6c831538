import Foundation
import Formats

/// Text inputs of the jobs (prompts, calibration text, perplexity data): a text file with one
/// record per line, or JSONL with the record in a string field.
package enum TextRecords {
    /// The file's non-empty lines; `what` names the file in the error ("prompts file").
    package static func lines(of path: String, what: String) throws -> [String] {
        guard let content = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw FormatError(path, "cannot read the \(what) as UTF-8 text")
        }
        return content.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// The string field `field` of line `number` (from 1) of the JSONL file `path`.
    package static func field(_ field: String, of line: String, number: Int, in path: String) throws -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let text = object[field] as? String else {
            throw FormatError(path, "line \(number) is not a JSON object with a string field \"\(field)\"")
        }
        return text
    }

    /// Every record: the lines of a text file, or field `field` of every line of a .jsonl file.
    package static func read(_ path: String, field: String, what: String) throws -> [String] {
        let lines = try lines(of: path, what: what)
        guard path.hasSuffix(".jsonl") else { return lines }
        return try lines.enumerated().map { try Self.field(field, of: $1, number: $0 + 1, in: path) }
    }
}
