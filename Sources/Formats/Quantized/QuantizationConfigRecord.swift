import Foundation

/// A record rqat keeps under its own key of a quantized checkpoint's quantization_config (what a
/// loaded model must run besides its weights), written as JSON and read back checked.
package protocol QuantizationConfigRecord: Codable {
    /// The quantization_config key that holds it.
    static var configKey: String { get }
    /// What a valid record is, for the error about an invalid one.
    static var validForm: String { get }
    /// Checks beyond decoding (ranges).
    var isValid: Bool { get }
}

extension QuantizationConfigRecord {
    package var isValid: Bool { true }

    /// As a JSON object, for `QuantizedCheckpoint.save`'s extra keys.
    package var jsonObject: [String: Any] {
        (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(self))) as? [String: Any] ?? [:]
    }

    /// The record a quantization_config holds; nil when it holds none. A malformed one is an
    /// error naming the file.
    package static func read(quantizationConfig q: [String: Any], path: String) throws -> Self? {
        guard let object = q[configKey] else { return nil }
        guard JSONSerialization.isValidJSONObject(object),
              let record = try? JSONDecoder().decode(Self.self, from: JSONSerialization.data(withJSONObject: object)),
              record.isValid
        else {
            throw FormatError(path, "quantization_config.\(configKey) is not \(validForm); re-export the model with rqat ptq")
        }
        return record
    }
}
