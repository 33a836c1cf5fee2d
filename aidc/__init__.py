"""The platform operator's tools: the ``aidc`` command (:mod:`aidc.cli`) and, in the hub, the other
end of ``aidc reload`` (:mod:`aidc.reload`)."""
