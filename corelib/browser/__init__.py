"""The Chromium/Selenium toolkit: starting a browser (factory), holding it as a BrowserSession (local
or on a Grid), its own DevTools link, its downloads as it reports them, profile clones and locks,
and cleaning up its processes. Nothing here knows of tasks or of the worker pool."""
