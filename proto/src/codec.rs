//! The codec every generated client and service uses: prost's, except that
//! bytes which do not decode into the expected message are the sender's
//! fault, `INVALID_ARGUMENT` saying what was expected, where prost's codec
//! reports `INTERNAL` (which reads as the server's fault, and which clients'
//! retry policies may retry).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec with decoding failures reported as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        WireCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder {
            prost: self.prost.decoder(),
            _message: PhantomData,
        }
    }
}

/// Decodes `U`, or says the bytes were not one.
#[derive(Debug)]
pub struct WireDecoder<U> {
    prost: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|status| {
            let expected = std::any::type_name::<U>().rsplit("::").next().unwrap_or("message");
            Status::invalid_argument(format!(
                "the bytes sent are not a valid {expected} message ({}): send protobuf as the .proto files in proto/ define it",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}
